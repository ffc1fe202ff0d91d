// The worker's limits hold for mail handed to it straight from submission (its row stored
// already claimed) as for rows it claims from the queue: a receiver that holds every request
// open sees at most queue.per_destination at once per domain and queue.concurrency in all; the
// rest waits in state queued and goes out, each message once, as slots free up.
import { afterEach, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, ENCRYPTED_FROM } from "../inbound/_fixtures.ts";

const running: ServerHandle[] = [];
let receiver: ReturnType<typeof Bun.serve> | null = null;
afterEach(async () => {
  for (const s of running.splice(0)) {
    await s.stop("SIGKILL").catch(() => {});
    s.box.cleanup();
  }
  receiver?.stop(true);
  receiver = null;
});

/** Answers POST /mxdeliv only when released; counts what is open at once, per domain and in all. */
function holdingReceiver() {
  const open = new Map<string, number>();
  const peak = new Map<string, number>();
  let peakAll = 0;
  const ids: string[] = [];
  const held: (() => void)[] = [];
  let holding = true;
  receiver = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const domain = new URL(req.url).pathname.split("/")[1]!;
      await req.arrayBuffer();
      ids.push(req.headers.get("x-madmail-delivery-id")!);
      open.set(domain, (open.get(domain) ?? 0) + 1);
      peak.set(domain, Math.max(peak.get(domain) ?? 0, open.get(domain)!));
      peakAll = Math.max(peakAll, [...open.values()].reduce((s, n) => s + n, 0));
      if (holding) await new Promise<void>((r) => held.push(r));
      open.set(domain, open.get(domain)! - 1);
      return new Response("ok");
    },
  });
  return {
    url: (domain: string) => `http://127.0.0.1:${receiver!.port}/${domain}/mxdeliv`,
    open: (domain: string) => open.get(domain) ?? 0,
    peak: (domain: string) => peak.get(domain) ?? 0,
    peakAll: () => peakAll,
    ids,
    release() {
      holding = false;
      held.splice(0).forEach((r) => r());
    },
    /** Answers the oldest held request; later ones are still held. */
    releaseOne() {
      held.shift()?.();
    },
  };
}

async function sender(rx: ReturnType<typeof holdingReceiver>, settings: [string, string][], env?: Record<string, string>) {
  const a = await startServe({
    env,
    setup: [
      ["init", "--domain", "a.test"],
      { args: ["user", "add", "alice@a.test", "--password-stdin"], stdin: "alicepw\n" },
      ["endpoint-cache", "set", "b.test", rx.url("b.test")],
      ["endpoint-cache", "set", "c.test", rx.url("c.test")],
      ...settings.map(([k, v]) => ["config", "set", k, v]),
    ],
  });
  running.push(a);
  const t = nodemailer.createTransport({ host: "127.0.0.1", port: a.submissionPort, secure: false, ignoreTLS: true, pool: true, auth: { user: "alice@a.test", pass: "alicepw" } });
  const send = (to: string) => t.sendMail({ envelope: { from: "alice@a.test", to: [to] }, raw: ENCRYPTED_FROM("alice@a.test") });
  const delivered = async () => (JSON.parse((await a.box.run(["queue", "list", "--json", "--state", "delivered"])).stdout) as unknown[]).length;
  return { a, send, delivered, close: () => t.close() };
}

test("queue.per_destination and queue.concurrency bound mail handed over at submission; the rest waits queued and goes out once", async () => {
  const rx = holdingReceiver();
  const { a, send, delivered, close } = await sender(rx, [["queue.per_destination", "2"], ["queue.concurrency", "3"]]);
  for (let i = 0; i < 4; i++) await send("bob@b.test");
  await waitUntil("two b.test deliveries open", () => rx.open("b.test") === 2);
  for (let i = 0; i < 3; i++) await send("carol@c.test");
  await waitUntil("one c.test delivery open", () => rx.open("c.test") === 1);
  // Give the worker time to go wrong: nothing more may open while the three are held.
  await Bun.sleep(500);
  expect([rx.open("b.test"), rx.open("c.test")]).toEqual([2, 1]);
  const states = JSON.parse((await a.box.run(["queue", "list", "--json"])).stdout) as { rcpt_domain: string; state: string }[];
  const count = (domain: string, state: string) => states.filter((r) => r.rcpt_domain === domain && r.state === state).length;
  expect([count("b.test", "delivering"), count("b.test", "queued"), count("c.test", "delivering"), count("c.test", "queued")]).toEqual([2, 2, 1, 2]);

  rx.release();
  await waitUntil("all seven delivered", async () => (await delivered()) === 7);
  close();
  expect(rx.ids.length).toBe(7);
  expect(new Set(rx.ids).size).toBe(7);
  expect([rx.peak("b.test"), rx.peak("c.test"), rx.peakAll()]).toEqual([2, 1, 3]);
});

test("a domain at its cap: each finished delivery brings its next queued row at once, not at the worker's next timed pass", async () => {
  const rx = holdingReceiver();
  const { send, delivered, close } = await sender(rx, [["queue.per_destination", "1"]]);
  for (let i = 0; i < 6; i++) await send("bob@b.test");
  await waitUntil("the first delivery open", () => rx.open("b.test") === 1);
  rx.release();
  const t0 = Date.now();
  await waitUntil("all six delivered", async () => (await delivered()) === 6);
  close();
  // One after another: five claims that each wait for the delivery before. Waiting for the
  // worker's timer instead (up to 2 s each) would take several seconds.
  expect(Date.now() - t0).toBeLessThan(4000);
  expect(rx.peak("b.test")).toBe(1);
  expect(new Set(rx.ids).size).toBe(6);
});

test("a destination at its cap with a backlog: no claim pass for each message queued to it; its rows are claimed in small batches as its deliveries finish", async () => {
  const rx = holdingReceiver();
  // The domain's batch: a quarter of per_destination (2), under the global eighth (8).
  const { a, send, delivered, close } = await sender(rx, [["queue.per_destination", "8"], ["queue.concurrency", "64"]], { MADMAIL_LOG_LEVEL: "4" });
  const passes = () => a.logs().split("\n").filter((l) => l.includes("claim pass:")).length;
  for (let i = 0; i < 40; i++) await send("bob@b.test");
  await waitUntil("eight b.test deliveries open", () => rx.open("b.test") === 8);
  // Before, messages queued behind the cap woke the loop for passes that found nothing to take
  // (7 passes here, and one per message under load).
  expect(passes()).toBeLessThanOrEqual(3);
  // Mail for another destination is not held up by b.test's backlog.
  await send("carol@c.test");
  await waitUntil("the c.test delivery open", () => rx.open("c.test") === 1);
  // Eight b.test deliveries finish one by one: the queued rows follow two at a time (before:
  // a pass for each). At most one more pass: the loop's 2 s timer.
  const before = passes();
  for (let i = 0; i < 8; i++) {
    rx.releaseOne();
    await Bun.sleep(100);
  }
  await waitUntil("eight b.test deliveries open again", () => rx.open("b.test") === 8);
  expect(passes() - before).toBeLessThanOrEqual(5);
  rx.release();
  await waitUntil("all 41 delivered", async () => (await delivered()) === 41);
  close();
  expect(rx.peak("b.test")).toBe(8);
  expect(rx.ids.length).toBe(41);
  expect(new Set(rx.ids).size).toBe(41);
});
