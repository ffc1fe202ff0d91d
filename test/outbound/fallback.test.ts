// Transport fallback, as the router orders it for a host: https://H/mxdeliv, http://H/mxdeliv,
// then SMTP H:25. Real listeners on a loopback address of their own (privileged ports: root).
import { afterAll, expect, test } from "bun:test";
import { startServe, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew } from "../inbound/_fixtures.ts";

const isRoot = process.getuid?.() === 0;
const cleanup: (() => void | Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

test.skipIf(!isRoot)("a peer answering 4xx on /mxdeliv does not end the delivery: SMTP on port 25 takes it", async () => {
  const host = "127.0.0.77";
  // Port 80: a web server that is no madmail peer (404). Port 443: nothing (connection refused).
  const web = Bun.serve({ hostname: host, port: 80, fetch: () => new Response("not here", { status: 404 }) });
  cleanup.push(() => web.stop(true));
  // B's MX door on host:25 (one server per state file: its other listeners stay on 127.0.0.1).
  const b = await startServe({ setup: [["init", "--domain", "b.test"], ["user", "add", "bob@b.test"]], smtp: `${host}:25` });
  cleanup.push(async () => (await b.stop(), b.box.cleanup()));
  const a = await startServe({
    setup: [["init", "--domain", "a.test"], ["endpoint-cache", "set", "b.test", host], ["config", "set", "queue.retry_schedule", "1h"]],
  });
  cleanup.push(async () => (await a.stop(), a.box.cleanup()));
  await Bun.sleep(300);
  expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  const deadline = Date.now() + 15_000;
  while (maildirNew(b, "bob@b.test").length === 0 && Date.now() < deadline) await Bun.sleep(50);
  expect(maildirNew(b, "bob@b.test").length).toBe(1);
  const show = JSON.parse((await a.box.run(["queue", "list", "--state", "delivered", "--json"])).stdout);
  expect(show[0]).toMatchObject({ state: "delivered", route: `smtp:${host}:25`, tries: 1 });
  const detail = JSON.parse((await a.box.run(["queue", "show", show[0].id, "--json"])).stdout);
  const transports = detail.attempts.map((x: { transport: string; outcome: string }) => `${x.transport}:${x.outcome}`);
  expect(transports).toEqual(["https:temporary", "http:permanent", "smtp:delivered"]);
}, 60_000);
