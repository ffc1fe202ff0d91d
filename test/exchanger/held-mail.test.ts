// Mail held for a pull exchanger while the sysadmin works on that exchanger: disabled, it keeps
// waiting (it used to be routed to the domain directly and bounce); removing it is refused while
// it holds mail, unless --force.
import { afterEach, expect, test } from "bun:test";
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
