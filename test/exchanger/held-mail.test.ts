// Mail held for a pull exchanger while the sysadmin works on that exchanger: disabled, it keeps
// waiting (it used to be routed to the domain directly and bounce); removing it is refused while
// it holds mail, unless --force.
import { afterEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew } from "../inbound/_fixtures.ts";

let x: ServerHandle | undefined;
afterEach(async () => {
  if (x) await x.stop().catch(() => {});
  x?.box.cleanup();
  x = undefined;
});

type Row = { id: string; state: string; route: string | null; tries: number; last_error: string | null };
const rows = async (s: ServerHandle) => JSON.parse((await s.box.run(["queue", "list", "--json"])).stdout) as Row[];

test("a disabled pull exchanger's mail stays held for it; remove is refused while it holds mail", async () => {
  x = await startServe({
    setup: [
      ["init", "--domain", "x.test"], ["user", "add", "alice@x.test"],
      ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"],
      ["config", "set", "queue.retry_schedule", "1s"], ["config", "set", "delivery.reroute_after", "0"],
    ],
  });
  expect((await x.box.run(["send", "--from", "alice@x.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  await waitUntil("held", async () => ((r) => (r[0]?.route === "exchanger:bside" ? r : undefined))(await rows(x!)));
  expect((await x.box.run(["exchanger", "disable", "bside"])).code).toBe(0);
  // Three more tries at one second: still held, with its route; no bounce.
  const [row] = await waitUntil("three more tries", async () => ((r) => (r[0] && r[0].tries >= 4 ? r : undefined))(await rows(x!)), 20_000);
  expect(row).toMatchObject({ state: "deferred", route: "exchanger:bside" });
  expect(row!.last_error).toContain('held for exchanger "bside", which is disabled');
  expect(maildirNew(x, "alice@x.test")).toEqual([]);
  const refused = await x.box.run(["exchanger", "remove", "bside"]);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toStartWith('madmail: exchanger "bside" holds 1 queue entry');
  expect(JSON.parse((await x.box.run(["exchanger", "list", "--json"])).stdout).map((e: { name: string }) => e.name)).toEqual(["bside"]);
  expect((await x.box.run(["exchanger", "remove", "bside", "--force", "--quiet"])).code).toBe(0);
});

test("a long poll whose token is replaced while it waits gets nothing; the mail goes to the new token", async () => {
  x = await startServe({
    setup: [["init", "--domain", "x.test"], ["user", "add", "alice@x.test"], ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"]],
  });
  const old = (await x.box.run(["exchanger", "token", "bside"])).stdout.trim();
  const poll = fetch(`${x.url}/exchanger/pull?wait=20`, { headers: { Authorization: `Bearer ${old}` } });
  await Bun.sleep(300);
  const fresh = (await x.box.run(["exchanger", "token", "bside"])).stdout.trim();
  expect((await x.box.run(["send", "--from", "alice@x.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  expect(await (await poll).json()).toEqual({ messages: [], more: false });
  const now = await (await fetch(`${x.url}/exchanger/pull?wait=5`, { headers: { Authorization: `Bearer ${fresh}` } })).json() as { messages: { rcpt_to: string[] }[] };
  expect(now.messages.map((m) => m.rcpt_to)).toEqual([["bob@b.test"]]);
});

test("an ack naming refused recipients: the entry is delivered, the refusal is in queue show, and the local sender gets a bounce", async () => {
  x = await startServe({
    setup: [["init", "--domain", "x.test"], ["user", "add", "alice@x.test"], ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"]],
  });
  const token = (await x.box.run(["exchanger", "token", "bside"])).stdout.trim();
  const auth = { Authorization: `Bearer ${token}` };
  expect((await x.box.run(["send", "--from", "alice@x.test", "--to", "bob@b.test", "--to", "nobody@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  const batch = await waitUntil("held", async () => {
    const b = await (await fetch(`${x!.url}/exchanger/pull?wait=2`, { headers: auth })).json() as { messages: { id: string }[] };
    return b.messages.length ? b : undefined;
  });
  const id = batch.messages[0]!.id;
  const ack = (body: unknown) => fetch(`${x!.url}/exchanger/ack`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify(body) });
  // Malformed refusals change nothing.
  for (const refused of [[1], { [id]: [{ address: "nobody@b.test", status: "4.2.2" }] }, { [id]: "x" }]) {
    expect((await ack({ ids: [id], refused })).status).toBe(400);
  }
  expect(maildirNew(x, "alice@x.test")).toEqual([]);
  // A recipient that is not the entry's own is not bounced.
  const refused = { [id]: [{ address: "nobody@b.test", status: "5.1.1", diagnostic: "smtp; 550 5.1.1 User unknown" }, { address: "eve@elsewhere.test", status: "5.1.1" }] };
  expect(await (await ack({ ids: [id], refused })).json()).toEqual({ acked: 1 });
  const dsn = await waitUntil("the bounce", async () => ((f) => (f.length ? f : undefined))(maildirNew(x!, "alice@x.test")));
  expect(dsn).toHaveLength(1);
  const text = readFileSync(join(x.box.dir, "data", "mail", "alice@x.test", "new", dsn[0]!), "utf8");
  expect(text).toContain("Final-Recipient: rfc822; nobody@b.test");
  expect(text).toContain("Status: 5.1.1");
  expect(text).not.toContain("eve@elsewhere.test");
  expect(text).not.toContain("Final-Recipient: rfc822; bob@b.test");
  const show = (await x.box.run(["queue", "show", id])).stdout;
  expect(show).toMatch(/State: +delivered/);
  expect(show).toContain("pulled and acknowledged; 1 recipient(s) refused");
  expect(show).toContain("smtp; 550 5.1.1 User unknown");
  // The same ack again settles nothing and bounces nothing more.
  expect(await (await ack({ ids: [id], refused })).json()).toEqual({ acked: 0 });
  await Bun.sleep(300);
  expect(maildirNew(x, "alice@x.test")).toHaveLength(1);
  // A wrong token: 401 naming the Bearer scheme.
  const no = await fetch(`${x.url}/exchanger/pull`, { headers: { Authorization: "Bearer nope" } });
  expect(no.status).toBe(401);
  expect(no.headers.get("www-authenticate")).toBe('Bearer realm="madmail exchanger"');
});

test("an ack that refuses every recipient of an entry leaves it dead, with the partner's reason", async () => {
  x = await startServe({
    setup: [["init", "--domain", "x.test"], ["user", "add", "alice@x.test"], ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"]],
  });
  const auth = { Authorization: `Bearer ${(await x.box.run(["exchanger", "token", "bside"])).stdout.trim()}` };
  expect((await x.box.run(["send", "--from", "alice@x.test", "--to", "nobody@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  const batch = await waitUntil("held", async () => {
    const b = await (await fetch(`${x!.url}/exchanger/pull?wait=2`, { headers: auth })).json() as { messages: { id: string }[] };
    return b.messages.length ? b : undefined;
  });
  const id = batch.messages[0]!.id;
  const refused = { [id]: [{ address: "nobody@b.test", status: "5.1.1", diagnostic: "smtp; 550 5.1.1 User unknown" }] };
  const r = await fetch(`${x.url}/exchanger/ack`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ ids: [id], refused }) });
  expect(await r.json()).toEqual({ acked: 1 });
  const [row] = JSON.parse((await x.box.run(["queue", "list", "--json"])).stdout) as { state: string; last_error: string }[];
  expect(row).toMatchObject({ state: "dead", last_error: "refused by the exchanger partner: smtp; 550 5.1.1 User unknown" });
  await waitUntil("the bounce", async () => ((f) => (f.length ? f : undefined))(maildirNew(x!, "alice@x.test")));
});
