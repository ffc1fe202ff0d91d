// Exchangers without a puller: push through a relaying exchanger, delayed reroute to the
// fallback exchanger, and the pull endpoint's authentication. Three servers on loopback:
// A (a.test, cannot reach B), X (the exchanger), B (b.test).
import { afterAll, describe, expect, test } from "bun:test";
import { startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew, readDelivered } from "../inbound/_fixtures.ts";

const running: ServerHandle[] = [];
afterAll(async () => {
  for (const s of running) {
    await s.stop().catch(() => {});
    s.box.cleanup();
  }
});

async function serve(setup: (string[] | { args: string[]; stdin: string })[]): Promise<ServerHandle> {
  const s = await startServe({ setup });
  running.push(s);
  return s;
}


const rows = async (s: ServerHandle, ...args: string[]) => JSON.parse((await s.box.run(["queue", "list", "--json", ...args])).stdout);

describe("push through an exchanger", () => {
  test("A -> X -> B: A pushes b.test mail to X, X relays it (relay.domains) to B", async () => {
    const b = await serve([["init", "--domain", "b.test"], ["user", "add", "bob@b.test"]]);
    const x = await serve([["init", "--domain", "x.test"], ["config", "set", "relay.domains", "b.test"], ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${b.httpPort}/mxdeliv`]]);
    const a = await serve([["init", "--domain", "a.test"], ["exchanger", "add", "x", `http://127.0.0.1:${x.httpPort}`, "--domains", "b.test"]]);
    expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
    await waitUntil("bob's mail", () => maildirNew(b, "bob@b.test").length === 1);
    expect(readDelivered(b, "bob@b.test")[0]!.equals(ENCRYPTED())).toBe(true);
    expect((await rows(a, "--state", "delivered"))[0].route).toBe(`http:http://127.0.0.1:${x.httpPort}/mxdeliv`);
    expect((await rows(x, "--state", "delivered"))[0]).toMatchObject({ rcpt_domain: "b.test", from: "alice@a.test" });
    // Without relay.domains (and without a token) X answers b.test like an unknown user: nothing queued.
    await x.box.run(["config", "unset", "relay.domains"]);
    const r = await fetch(`${x.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "alice@a.test", "X-Mail-To": "bob@b.test" }, body: ENCRYPTED() });
    expect(r.status).toBe(200);
    expect((await rows(x)).length).toBe(0);
    // A partner presenting a token X does not know is told so (401), not silently dropped.
    const bad = await fetch(`${x.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "alice@a.test", "X-Mail-To": "bob@b.test", Authorization: "Bearer mmx_stale" }, body: ENCRYPTED() });
    expect({ status: bad.status, text: await bad.text() }).toEqual({ status: 401, text: "unauthorized" });
  });

  test("delayed reroute: still failing after delivery.reroute_after, the mail goes via the fallback exchanger", async () => {
    const b = await serve([["init", "--domain", "b.test"], ["user", "add", "bob@b.test"]]);
    const x = await serve([["init", "--domain", "x.test"], ["config", "set", "relay.domains", "b.test"], ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${b.httpPort}/mxdeliv`]]);
    const a = await serve([
      ["init", "--domain", "a.test"],
      // A cannot reach B: its route to b.test ends at a closed port.
      ["endpoint-cache", "set", "b.test", "http://127.0.0.1:9/mxdeliv"],
      ["exchanger", "add", "spare", `http://127.0.0.1:${x.httpPort}`, "--fallback"],
      ["config", "set", "delivery.reroute_after", "2s"],
      ["config", "set", "queue.retry_schedule", "1s"],
    ]);
    const t0 = Date.now();
    const id = (await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).stdout.trim();
    expect(id).toMatch(/^[0-9a-z]{16}$/);
    await waitUntil("bob's mail", () => maildirNew(b, "bob@b.test").length === 1);
    expect(Date.now() - t0).toBeGreaterThan(1900);
    const [row] = await rows(a, "--state", "delivered");
    expect(row).toMatchObject({ rerouted_to: "spare", route: `http:http://127.0.0.1:${x.httpPort}/mxdeliv` });
    expect(row.tries).toBeGreaterThan(1);
    const show = JSON.parse((await a.box.run(["queue", "show", row.id, "--json"])).stdout);
    expect(show.attempts.some((t: { transport: string; detail: string }) => t.transport === "reroute" && t.detail === "rerouted to fallback exchanger spare")).toBe(true);
    // The delivery id A used stays the same across the reroute: X stored it once.
    expect(maildirNew(b, "bob@b.test").length).toBe(1);
  });
});

describe("pull endpoint authentication and monitoring", () => {
  test("wrong, unknown and disabled tokens get the same 401; status shows held mail; STALE when quiet", async () => {
    const x = await serve([
      ["init", "--domain", "x.test"],
      ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test", "--poll-interval", "5"],
      ["config", "set", "relay.domains", "b.test"],
    ]);
    const token = (await x.box.run(["exchanger", "token", "bside"])).stdout.trim();
    const pull = (t: string) => fetch(`${x.url}/exchanger/pull?wait=0`, { headers: { Authorization: `Bearer ${t}` } }).then(async (r) => ({ status: r.status, body: await r.text() }));
    const ok = await pull(token);
    expect(ok).toEqual({ status: 200, body: '{"messages":[],"more":false}' });
    const wrong = await pull(token.slice(0, -2) + "xx");
    expect(wrong).toEqual({ status: 401, body: '{"error":"unauthorized"}' });
    expect(await pull("mmx_unknown")).toEqual(wrong);
    expect((await fetch(`${x.url}/exchanger/pull`)).status).toBe(401);
    await x.box.run(["exchanger", "disable", "bside"]);
    expect(await pull(token)).toEqual(wrong);
    await x.box.run(["exchanger", "enable", "bside"]);

    // Mail for b.test is held for bside; status counts it.
    await fetch(`${x.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "a@a.test", "X-Mail-To": "bob@b.test" }, body: ENCRYPTED() });
    const st = await waitUntil("held", async () => {
      const s = JSON.parse((await x.box.run(["exchanger", "status", "bside", "--json"])).stdout);
      return s.held === 1 ? s : undefined;
    });
    expect(st).toMatchObject({ name: "bside", mode: "pull", enabled: true, held: 1, stale: false });
    expect(st.last_pull_at).not.toBeNull();
    // Long poll answers as soon as mail is held; ack removes it.
    const got = await (await fetch(`${x.url}/exchanger/pull?wait=5`, { headers: { Authorization: `Bearer ${token}` } })).json() as { messages: { id: string; body_base64: string }[] };
    expect(got.messages.length).toBe(1);
    expect(Buffer.from(got.messages[0]!.body_base64, "base64").equals(ENCRYPTED())).toBe(true);
    const ack = await fetch(`${x.url}/exchanger/ack`, { method: "POST", headers: { Authorization: `Bearer ${token}` }, body: JSON.stringify({ ids: [got.messages[0]!.id, "nope"] }) });
    expect(await ack.json()).toEqual({ acked: 1 });
    const again = await fetch(`${x.url}/exchanger/ack`, { method: "POST", headers: { Authorization: `Bearer ${token}` }, body: JSON.stringify({ ids: [got.messages[0]!.id] }) });
    expect(await again.json()).toEqual({ acked: 0 });
    expect(JSON.parse((await x.box.run(["exchanger", "status", "bside", "--json"])).stdout).held).toBe(0);
    // With a 5 s interval, 3 quiet intervals make it stale.
    await Bun.sleep(15_500);
    const list = (await x.box.run(["exchanger", "list"])).stdout;
    expect(list).toMatch(/^bside .* STALE /m);
  }, 60_000);
});
