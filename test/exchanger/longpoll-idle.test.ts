// Regression: a long poll that waits longer than the HTTP server's idle timeout (Bun's default
// is 10 s) must still get the mail that arrives late, and nothing may stay leased to a dead poll.
import { afterAll, expect, test } from "bun:test";
import { startServe, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED } from "../inbound/_fixtures.ts";

let x: ServerHandle | undefined;
afterAll(async () => {
  await x?.stop();
  x?.box.cleanup();
});

test("a 25 s long poll answers with mail that arrives after 12 s of silence", async () => {
  x = await startServe({
    setup: [["init", "--domain", "x.test"], ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"], ["config", "set", "relay.domains", "b.test"]],
  });
  const token = (await x.box.run(["exchanger", "token", "bside"])).stdout.trim();
  const t0 = Date.now();
  const poll = fetch(`${x.url}/exchanger/pull?wait=25`, { headers: { Authorization: `Bearer ${token}` } });
  await Bun.sleep(12_000);
  const post = await fetch(`${x.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "a@a.test", "X-Mail-To": "bob@b.test" }, body: ENCRYPTED() });
  expect(post.status).toBe(200);
  const res = await poll;
  expect(res.status).toBe(200);
  const body = (await res.json()) as { messages: { body_base64: string }[] };
  expect(body.messages.length).toBe(1);
  expect(Date.now() - t0).toBeLessThan(20_000);
}, 40_000);
