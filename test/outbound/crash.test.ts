// kill -9 of the sending server in the middle of a load: after a restart every message reaches
// the receiving madmail, none twice (stable X-Madmail-Delivery-Id + the receiver's dedup).
import { afterAll, expect, test } from "bun:test";
import type { ServerHandle } from "../helpers/server.ts";
import { RawSmtp } from "../helpers/smtp-client.ts";
import { ENCRYPTED_FROM, readDelivered } from "../inbound/_fixtures.ts";
import { startPair } from "./_two-servers.ts";

const running: ServerHandle[] = [];
afterAll(async () => {
  for (const s of running) {
    s.proc.kill("SIGKILL");
    s.box.cleanup();
  }
});

test("kill -9 mid-load: 100 messages, each delivered exactly once after restart", async () => {
  // One delivery at a time so that the kill lands in the middle of the run.
  const { a, b } = await startPair({ aSetup: [["config", "set", "queue.concurrency", "1"], ["config", "set", "queue.per_destination", "1"]] });
  running.push(a, b);
  const { client } = await RawSmtp.open(a.submissionPort);
  await client.cmd("EHLO load.test");
  expect((await client.cmd(`AUTH PLAIN ${Buffer.from("\0alice@a.test\0alicepw").toString("base64")}`)).code).toBe(235);
  for (let i = 0; i < 100; i++) {
    expect((await client.cmd("MAIL FROM:<alice@a.test>")).code).toBe(250);
    expect((await client.cmd("RCPT TO:<bob@b.test>")).code).toBe(250);
    const [r] = await client.data(`X-Seq: ${i}\r\n${ENCRYPTED_FROM("alice@a.test").toString("latin1")}`);
    expect(r!.code).toBe(250);
  }
  client.close();
  // Wait until some, not all, have arrived, then pull the plug.
  const deadline = Date.now() + 20_000;
  while (readDelivered(b, "bob@b.test").length < 10 && Date.now() < deadline) await Bun.sleep(5);
  a.proc.kill("SIGKILL");
  await a.proc.exited;
  const atKill = readDelivered(b, "bob@b.test").length;
  expect(atKill).toBeLessThan(100);

  const a2 = await restartSame(a);
  running.push(a2);
  const done = Date.now() + 30_000;
  while (readDelivered(b, "bob@b.test").length < 100 && Date.now() < done) await Bun.sleep(50);
  await Bun.sleep(1000); // anything sent twice would land by now
  const files = readDelivered(b, "bob@b.test").map((f) => /^X-Seq: (\d+)/.exec(f.toString("latin1"))![1]);
  expect(files.length).toBe(100);
  expect(new Set(files).size).toBe(100);
}, 90_000);

async function restartSame(s: ServerHandle): Promise<ServerHandle> {
  const proc = Bun.spawn(
    [s.box.bin, "serve", "--http", `127.0.0.1:${s.httpPort}`, "--smtp", `127.0.0.1:${s.smtpPort}`, "--lmtp", `127.0.0.1:${s.lmtpPort}`, "--submission", `127.0.0.1:${s.submissionPort}`, "--submissions", "off"],
    { cwd: s.box.dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", MADMAIL_DB: s.box.db }, stdout: "ignore", stderr: "ignore" },
  );
  for (let i = 0; i < 200; i++) {
    if (await fetch(`${s.url}/healthz`).then((r) => r.ok, () => false)) break;
    await Bun.sleep(25);
  }
  return { ...s, proc };
}
