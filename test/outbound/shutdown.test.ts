// SIGTERM with deliveries in flight: they finish within delivery.shutdown_grace, or are
// handed back (deferred, due at once) for the next start. Nothing is lost either way.
import { afterAll, expect, test } from "bun:test";
import { startServe, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew } from "../inbound/_fixtures.ts";

const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function slowPeer(delayMs: number) {
  let received = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1", port: 0, idleTimeout: 60,
    async fetch(req) {
      await req.arrayBuffer();
      await Bun.sleep(delayMs);
      received++;
      return new Response("OK");
    },
  });
  cleanup.push(() => server.stop(true));
  return { url: `http://127.0.0.1:${server.port}/mxdeliv`, received: () => received };
}

async function sender(target: string, grace: string): Promise<ServerHandle> {
  const a = await startServe({
    setup: [["init", "--domain", "a.test"], ["endpoint-cache", "set", "b.test", target], ["config", "set", "delivery.shutdown_grace", grace]],
  });
  cleanup.push(() => a.box.cleanup());
  return a;
}

async function waitForState(a: ServerHandle, state: string) {
  for (let i = 0; i < 200; i++) {
    const rows = JSON.parse((await a.box.run(["queue", "list", "--state", state, "--json"])).stdout);
    if (rows.length) return rows;
    await Bun.sleep(25);
  }
  throw new Error(`no row in state ${state}`);
}

test("an in-flight delivery finishes before the server exits", async () => {
  const peer = await slowPeer(1500);
  const a = await sender(peer.url, "15s");
  await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() });
  await waitForState(a, "delivering");
  const t0 = Date.now();
  expect(await a.stop("SIGTERM")).toBe(0);
  expect(Date.now() - t0).toBeLessThan(5000);
  expect(peer.received()).toBe(1);
  const rows = JSON.parse((await a.box.run(["queue", "list", "--state", "delivered", "--json"])).stdout);
  expect(rows.length).toBe(1);
}, 30_000);

test("past the grace period the delivery is aborted and handed back, due at once", async () => {
  const peer = await slowPeer(20_000);
  const a = await sender(peer.url, "1s");
  await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() });
  await waitForState(a, "delivering");
  const t0 = Date.now();
  expect(await a.stop("SIGTERM")).toBe(0);
  const took = Date.now() - t0;
  expect(took).toBeGreaterThan(900);
  expect(took).toBeLessThan(5000);
  const [row] = JSON.parse((await a.box.run(["queue", "list", "--json"])).stdout);
  expect(row).toMatchObject({ state: "deferred", tries: 0 });
  expect(Date.parse(row.next_attempt_at)).toBeLessThanOrEqual(Date.now());
}, 30_000);

test("an attempt that outlasts queue.lease keeps its row: the lease is extended while it runs, hold is refused, the outcome is recorded", async () => {
  const peer = await slowPeer(22_000);
  const a = await startServe({
    setup: [
      ["init", "--domain", "a.test"], ["endpoint-cache", "set", "b.test", peer.url],
      ["config", "set", "queue.lease", "30s"], ["config", "set", "delivery.timeout", "60s"],
    ],
  });
  cleanup.push(async () => (await a.stop(), a.box.cleanup()));
  await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() });
  const [claimed] = await waitForState(a, "delivering");
  const first = Date.parse(JSON.parse((await a.box.run(["queue", "show", claimed.id, "--json"])).stdout).lease_until);
  await Bun.sleep(18_000);
  const now = JSON.parse((await a.box.run(["queue", "show", claimed.id, "--json"])).stdout);
  expect(now.state).toBe("delivering");
  expect(Date.parse(now.lease_until)).toBeGreaterThan(first);
  expect((await a.box.run(["queue", "hold", claimed.id])).code).toBe(1);
  const [row] = await waitForState(a, "delivered");
  expect(row.tries).toBe(1);
  expect(peer.received()).toBe(1);
  expect(a.logs()).not.toContain("was changed while being delivered");
}, 60_000);

test("SIGTERM while a /mxdeliv upload is on its way: the message is stored and answered before the server exits", async () => {
  const b = await startServe({ setup: [["init", "--domain", "b.test"], ["user", "add", "bob@b.test"]] });
  cleanup.push(() => b.box.cleanup());
  const body = ENCRYPTED();
  const { request } = await import("node:http");
  const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(`http://127.0.0.1:${b.httpPort}/mxdeliv`, {
      method: "POST", headers: { "X-Mail-From": "alice@a.test", "X-Mail-To": "bob@b.test", "Content-Length": String(body.length) },
    }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    req.write(body.subarray(0, 100));
    // The rest after the signal: the request was begun before it.
    setTimeout(() => req.end(body.subarray(100)), 500);
  });
  await Bun.sleep(200);
  const exited = b.stop("SIGTERM");
  expect(await answer).toEqual({ status: 200, text: "OK" });
  expect(await exited).toBe(0);
  expect(maildirNew(b, "bob@b.test")).toHaveLength(1);
}, 30_000);
