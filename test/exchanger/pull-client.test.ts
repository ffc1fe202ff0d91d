// Exchanger pull, client side: drainPartner against a fake partner (in process, real accept
// pipeline), and `madmail pull-client` from the compiled binary (exit codes, lock, --json).
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { openDb, type OpenedDb } from "../../src/db/open.ts";
import { drainPartner, parseBaseUrl, verifyTlsFor, type PullCore } from "../../src/exchanger/pull-client.ts";
import { openCore, type Core } from "../../src/server.ts";
import type { Envelope, RcptVerdict } from "../../src/inbound/types.ts";
import { sandbox, type Sandbox } from "../helpers/binary.ts";
import { freePort, startServe, type ServerHandle } from "../helpers/server.ts";
import { havePeers, makeCert } from "../helpers/peers.ts";
import { fakePartner, type FakePartner, type HeldMessage } from "./_fake-partner.ts";

const ENCRYPTED = readFileSync(resolve(import.meta.dir, "../fixtures/samples/pass-deltachat-2.57-chat.eml"));
const TOKEN = "tok-123";

const msg = (id: string, rcpt_to = ["bob@chat.test"], extra: Partial<HeldMessage> = {}): HeldMessage => ({
  id, mail_from: "alice@peer.test", rcpt_to, body: ENCRYPTED, ...extra,
});

let sb: Sandbox;
let partner: FakePartner | undefined;
const partners: FakePartner[] = [];
const newPartner = (...a: Parameters<typeof fakePartner>) => {
  const p = fakePartner(...a);
  partners.push(p);
  return p;
};

beforeEach(async () => {
  sb = sandbox();
  for (const args of [["init", "--domain", "chat.test"], ["user", "add", "bob@chat.test"], ["user", "add", "carol@chat.test"]]) {
    const r = await sb.run(args);
    if (r.code !== 0) throw new Error(`${args.join(" ")}: ${r.stderr}`);
  }
  partner = newPartner();
});
afterEach(async () => {
  for (const p of partners.splice(0)) await p.stop();
  sb.cleanup();
});

const maildir = (address: string) => {
  const dir = join(sb.dir, "data", "mail", address, "new");
  return existsSync(dir) ? readdirSync(dir) : [];
};

/** The real accept pipeline on the sandbox's state file, for the length of fn. */
async function withCore<T>(fn: (core: Core, state: OpenedDb) => Promise<T>): Promise<T> {
  const state = await openDb(sb.db);
  const core = await openCore(state);
  try {
    return await fn(core, state);
  } finally {
    await core.writes.drain();
    await core.store.dispose();
    await state.close();
  }
}

const drain = (core: PullCore, o: Partial<Parameters<typeof drainPartner>[0]> = {}) =>
  drainPartner({ baseUrl: partner!.url, token: TOKEN, wait: 0, max: 50, maxTimeMs: 20_000, core, ...o });

describe("drainPartner with the real pipeline", () => {
  test("pulls batch after batch until an empty answer, acks each batch, delivers to Maildir", async () => {
    partner!.add(...Array.from({ length: 7 }, (_, i) => msg(`m${i}`, i % 2 ? ["bob@chat.test"] : ["bob@chat.test", "carol@chat.test"])));
    const r = await withCore((core) => drain(core, { max: 3 }));
    expect(r).toMatchObject({ pulled: 7, delivered: 11, relayed: 0, refused: 0, deferred: 0, batches: 4, drained: true });
    expect(r.error).toBeUndefined();
    expect(partner!.pulls.map((p) => [p.path, p.wait, p.max, p.auth])).toEqual(Array(4).fill(["/exchanger/pull", 0, 3, `Bearer ${TOKEN}`]));
    expect(partner!.acks).toEqual([["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]);
    expect(partner!.held.size).toBe(0);
    expect(maildir("bob@chat.test")).toHaveLength(7);
    expect(maildir("carol@chat.test")).toHaveLength(4);
  });

  test("nothing waiting: one pull, no ack, drained", async () => {
    const r = await withCore((core) => drain(core));
    expect(r).toMatchObject({ pulled: 0, delivered: 0, batches: 1, drained: true });
    expect(partner!.acks).toEqual([]);
  });

  test("a message pulled twice (ack lost) is stored once", async () => {
    partner = newPartner({ ignoreAcks: true, leaseMs: 0 });
    partner.add(msg("dup-1"));
    // First run: accepted and acked, but the partner "loses" the ack (as after a crash).
    const first = await withCore((core) => drain(core, { maxRounds: 1 }));
    expect(first).toMatchObject({ pulled: 1, delivered: 1 });
    partner.opts.ignoreAcks = false;
    const second = await withCore((core) => drain(core));
    expect(second).toMatchObject({ pulled: 1, delivered: 0, duplicates: 1, drained: true });
    expect(partner.acks).toEqual([["dup-1"], ["dup-1"]]);
    expect(maildir("bob@chat.test")).toHaveLength(1);
  });

  test("a partner that keeps handing out what we acknowledged is a configuration error, not a loop", async () => {
    partner = newPartner({ ignoreAcks: true, leaseMs: 0 });
    partner.add(msg("again"));
    const r = await withCore((core) => drain(core));
    expect(r.error).toEqual({ kind: "config", message: `${partner.url}: hands out again messages we acknowledged; is our ack reaching it? (madmail protocol)` });
    // Its ack answers say it took nothing: that counts from the second time on (a partner that
    // restarted offers the ids once more, and takes the second ack), so three pulls, not two.
    expect(partner.pulls).toHaveLength(3);
    expect(maildir("bob@chat.test")).toHaveLength(1);
  });

  test("remote recipients are relayed into the queue; local unknown users are refused and named in the ack (the partner bounces)", async () => {
    partner!.add(msg("mix", ["bob@chat.test", "x@remote.test", "nobody@chat.test"]));
    const r = await withCore(async (core, state) => {
      const out = await drain(core);
      const rows = await state.db.selectFrom("deliveries").select(["rcpt_domain", "rcpts"]).execute();
      expect(rows).toEqual([{ rcpt_domain: "remote.test", rcpts: JSON.stringify(["x@remote.test"]) }]);
      return out;
    });
    expect(r).toMatchObject({ pulled: 1, delivered: 1, relayed: 1, refused: 1, deferred: 0 });
    expect(partner!.acks).toEqual([["mix"]]);
    expect(partner!.refusals).toEqual([{ mix: [{ address: "nobody@chat.test", status: "5.1.1", diagnostic: "smtp; 550 5.1.1 User unknown" }] }]);
  });

  test("a recipient over quota leaves the message with the partner; pulled again with room, the others' copies are not stored twice", async () => {
    await sb.run(["user", "quota", "carol@chat.test", "1K"]);
    partner!.add(msg("q", ["bob@chat.test", "carol@chat.test"]));
    const r = await withCore((core) => drain(core));
    expect(r).toMatchObject({ pulled: 1, delivered: 1, refused: 0, deferred: 1 });
    expect(r.error?.message).toContain("deferred (quota)");
    expect(partner!.acks).toEqual([]);
    expect(maildir("bob@chat.test")).toHaveLength(1);
    expect(maildir("carol@chat.test")).toHaveLength(0);
    expect((await sb.run(["user", "quota", "carol@chat.test", "1G"])).stderr).toBe("");
    partner!.held.get("q")!.leasedUntil = 0;
    const again = await withCore((core) => drain(core));
    expect(again).toMatchObject({ pulled: 1, delivered: 1, duplicates: 1, deferred: 0 });
    expect(partner!.acks).toEqual([["q"]]);
    expect(maildir("bob@chat.test")).toHaveLength(1);
    expect(maildir("carol@chat.test")).toHaveLength(1);
  });

  test("relayed mail is queued once although the final record of its id was lost (a crash before the ack)", async () => {
    partner!.add(msg("r1", ["x@remote.test"]));
    await withCore(async (core, state) => {
      // A kill between the queue's commit and the id's final record (bookkeeping, not durable):
      // that record fails here, and the ack is lost with the process.
      const run = core.writes.run.bind(core.writes);
      core.writes.run = ((fn, o) => (o?.durable === false ? Promise.reject(new Error("killed")) : run(fn, o))) as typeof core.writes.run;
      partner!.opts.ignoreAcks = true;
      expect(await drain(core, { maxRounds: 1 })).toMatchObject({ pulled: 1, relayed: 1 });
      core.writes.run = run;
      partner!.opts.ignoreAcks = false;
      partner!.held.get("r1")!.leasedUntil = 0;
      expect(await drain(core, { maxRounds: 1 })).toMatchObject({ pulled: 1, relayed: 0, duplicates: 1 });
      expect(await state.db.selectFrom("deliveries").select("rcpts").execute()).toEqual([{ rcpts: JSON.stringify(["x@remote.test"]) }]);
    });
  });

  test("mail refused for every recipient (plaintext: encryption gate) is acknowledged and counted refused", async () => {
    partner!.add(msg("plain", ["bob@chat.test"], { body: "From: <a@peer.test>\r\nTo: <bob@chat.test>\r\nSubject: hi\r\n\r\nplain\r\n" }), msg("ok"));
    const r = await withCore((core) => drain(core));
    expect(r).toMatchObject({ pulled: 2, delivered: 1, refused: 1, deferred: 0, drained: true });
    expect(partner!.acks.flat().sort()).toEqual(["ok", "plain"]);
    expect(maildir("bob@chat.test")).toHaveLength(1);
  });

  test("an unusable item (no recipients) is left unacknowledged and reported temporary", async () => {
    partner!.add(msg("bad", []), msg("good"));
    const r = await withCore((core) => drain(core));
    expect(r).toMatchObject({ pulled: 2, delivered: 1, deferred: 1, batches: 1 });
    expect(r.error?.kind).toBe("temporary");
    expect(partner!.acks).toEqual([["good"]]);
    expect(partner!.held.has("bad")).toBe(true);
  });

  test("--once semantics: maxRounds 1 takes one batch and leaves the rest", async () => {
    partner!.add(...Array.from({ length: 5 }, (_, i) => msg(`o${i}`)));
    const r = await withCore((core) => drain(core, { max: 2, maxRounds: 1 }));
    expect(r).toMatchObject({ pulled: 2, batches: 1, drained: false });
    expect(partner!.held.size).toBe(3);
  });

  test("an answer that keeps flowing is read to its end however long it takes; one that stops for the slack is a temporary failure", async () => {
    const answer = JSON.stringify({ messages: [{ id: "slow1", mail_from: "alice@peer.test", rcpt_to: ["bob@chat.test"], size: ENCRYPTED.length, queued_at: new Date().toISOString(), body_base64: ENCRYPTED.toString("base64") }], more: false });
    const pieces = Array.from({ length: 6 }, (_, i) => answer.slice((i * answer.length) / 6, ((i + 1) * answer.length) / 6));
    let stall = false;
    const acks: string[][] = [];
    const slow = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        if (req.method === "POST") {
          acks.push(((await req.json()) as { ids: string[] }).ids);
          return Response.json({ acked: 1 });
        }
        // 6 pieces, 250 ms apart: 1.25 s in all, against a slack of 700 ms.
        const body = new ReadableStream({
          async pull(c) {
            const next = pieces.shift();
            if (next === undefined || (stall && pieces.length < 3)) return stall ? new Promise(() => {}) : c.close();
            await Bun.sleep(250);
            c.enqueue(new TextEncoder().encode(next));
          },
        });
        return new Response(body, { headers: { "content-type": "application/json" } });
      },
    });
    try {
      const r = await withCore((core) => drain(core, { baseUrl: `http://127.0.0.1:${slow.port}`, slackMs: 700, maxRounds: 1 }));
      expect(r.error).toBeUndefined();
      expect(r).toMatchObject({ pulled: 1, delivered: 1 });
      expect(acks).toEqual([["slow1"]]);
      stall = true;
      pieces.push(...Array.from({ length: 6 }, (_, i) => answer.slice((i * answer.length) / 6, ((i + 1) * answer.length) / 6)));
      const stalled = await withCore((core) => drain(core, { baseUrl: `http://127.0.0.1:${slow.port}`, slackMs: 700, maxRounds: 1 }));
      expect(stalled.error).toMatchObject({ kind: "temporary", message: expect.stringContaining("the answer stopped for 1 s") });
    } finally {
      slow.stop(true);
    }
  });

  test("max time: no new round after the deadline, and the wait never outlasts it", async () => {
    partner = newPartner({ delayMs: 300 });
    partner.add(...Array.from({ length: 5 }, (_, i) => msg(`t${i}`)));
    const r = await withCore((core) => drain(core, { max: 1, wait: 30, maxTimeMs: 500 }));
    expect(r.batches).toBe(2);
    expect(r.drained).toBe(false);
    expect(r.error).toBeUndefined();
    expect(partner.pulls.map((p) => p.wait)).toEqual([0, 0]);
  });
});

describe("drainPartner: verdicts decide the ack (stubbed pipeline)", () => {
  function stubCore(verdictFor: (rcpt: string) => RcptVerdict) {
    const seen: Envelope[] = [];
    const core = {
      acceptor: { accept: async (env: Envelope) => (seen.push(env), { rcpts: env.rcpts.map(verdictFor), ms: 1 }) },
      snapshot: { get: async () => ({ localDomains: new Set(["chat.test"]) }) },
    } as unknown as PullCore;
    return { core, seen };
  }
  const byLocalPart = (rcpt: string): RcptVerdict => {
    const local = rcpt.split("@")[0]!;
    if (local === "temp") return { verdict: "tempfail", detail: "local delivery failed" };
    if (local === "rej") return { verdict: "reject", reason: "encryption", detail: "plaintext" };
    if (local === "full") return { verdict: "reject", reason: "quota", detail: "over quota" };
    if (local === "dis") return { verdict: "dismiss" };
    return { verdict: "accept", stored: true };
  };

  test("tempfail, and over quota for every recipient, are not acknowledged (a push would be retried too); accept, reject and dismiss are", async () => {
    const { core, seen } = stubCore(byLocalPart);
    partner!.add(msg("a", ["bob@chat.test"]), msg("b", ["temp@chat.test", "bob@chat.test"]), msg("c", ["x@remote.test"]), msg("d", ["rej@chat.test"]), msg("e", ["dis@chat.test"]), msg("f", ["full@chat.test"]));
    const r = await drain(core);
    expect(r).toMatchObject({ pulled: 6, delivered: 2, relayed: 1, refused: 2, deferred: 2, batches: 1, drained: false });
    expect(r.error).toEqual({ kind: "temporary", message: "2 recipient(s) deferred (local delivery failed); left with the partner, to be pulled again" });
    expect(partner!.acks.map((a) => [...a].sort())).toEqual([["a", "c", "d", "e"]]);
    // Every message goes in through door "pull" with the partner's id as delivery id.
    expect(seen.map((e) => [e.door, e.deliveryId, e.mailFrom, e.peer]).sort()).toEqual(
      ["a", "b", "c", "d", "e", "f"].map((id) => ["pull", id, "alice@peer.test", new URL(partner!.url).host]),
    );
    expect(Buffer.from(seen[0]!.body).equals(ENCRYPTED)).toBe(true);
  });

  test("an acceptor that throws defers the message", async () => {
    const core = {
      acceptor: { accept: async () => { throw new Error("disk on fire"); } },
      snapshot: { get: async () => ({ localDomains: new Set(["chat.test"]) }) },
    } as unknown as PullCore;
    partner!.add(msg("boom"));
    const r = await drain(core);
    expect(r).toMatchObject({ pulled: 1, deferred: 1 });
    expect(r.error?.kind).toBe("temporary");
    expect(partner!.acks).toEqual([]);
  });

  const statusCases: [string, number, "config" | "temporary"][] = [
    ["401", 401, "config"], ["403", 403, "config"], ["404", 404, "config"], ["400", 400, "config"], ["301", 301, "config"],
    ["429", 429, "temporary"], ["500", 500, "temporary"], ["502", 502, "temporary"], ["503", 503, "temporary"],
  ];
  test.each(statusCases)("status %s -> %s", async (_, status, kind) => {
    partner = newPartner({ status });
    const r = await drain(stubCore(byLocalPart).core);
    expect(r.error?.kind).toBe(kind);
    expect(r.pulled).toBe(0);
  });

  test("wrong token: 401 is a configuration error naming the cause", async () => {
    const r = await drain(stubCore(byLocalPart).core, { token: "nope" });
    expect(r.error).toEqual({
      kind: "config",
      message: `GET ${partner!.url}/exchanger/pull: 401 {"error":"unauthorized"}: the partner does not accept our token (wrong, unknown or disabled there)`,
    });
  });

  test.each([
    ["not JSON", "<html>hello</html>"],
    ["no messages array", '{"more":false}'],
    ["item without id", '{"messages":[{"mail_from":"a@b","rcpt_to":["bob@chat.test"],"body_base64":"QQ=="}],"more":false}'],
  ])("bad answer (%s) is a configuration error", async (_, raw) => {
    partner = newPartner({ rawAnswer: raw });
    const r = await drain(stubCore(byLocalPart).core);
    expect(r.error?.kind).toBe("config");
  });

  test("nobody listening: temporary", async () => {
    const r = await drain(stubCore(byLocalPart).core, { baseUrl: `http://127.0.0.1:${await freePort()}` });
    expect(r.error?.kind).toBe("temporary");
    expect(r.error?.message).toContain("ECONNREFUSED");
  });

  test.each(["ftp://x.example", "not a url", "https://u:p@x.example", "https://x.example/?a=b"])("bad URL %p: configuration error", async (url) => {
    const r = await drain(stubCore(byLocalPart).core, { baseUrl: url });
    expect(r.error?.kind).toBe("config");
    expect(() => parseBaseUrl(url)).toThrow("invalid partner URL");
  });

  test("abort ends a long poll at once", async () => {
    const ac = new AbortController();
    const t0 = performance.now();
    setTimeout(() => ac.abort(), 200);
    const r = await drain(stubCore(byLocalPart).core, { wait: 30, signal: ac.signal });
    expect(performance.now() - t0).toBeLessThan(1500);
    expect(r.error).toEqual({ kind: "temporary", message: "interrupted" });
  });

  test("TLS verification: on for names, off for IP literals (auto), as the setting says otherwise", () => {
    expect(verifyTlsFor("https://hub.example")).toBe(true);
    expect(verifyTlsFor("https://10.0.0.1:8443")).toBe(false);
    expect(verifyTlsFor("https://[2001:db8::1]")).toBe(false);
    expect(verifyTlsFor("https://10.0.0.1", "always")).toBe(true);
    expect(verifyTlsFor("https://hub.example", "never")).toBe(false);
  });

  test.skipIf(!havePeers().openssl)("HTTPS: an IP literal is not verified (auto); a name is, and a self-signed certificate is then a temporary failure", async () => {
    const { cert, key } = await makeCert(join(sb.dir, "tls"), "hub.test");
    partner = newPartner({ tls: { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") } });
    partner.add(msg("tls1"));
    const { core } = stubCore(byLocalPart);
    const byIp = await drain(core);
    expect(byIp).toMatchObject({ pulled: 1, drained: true });
    expect(byIp.error).toBeUndefined();
    const port = new URL(partner.url).port;
    for (const [baseUrl, verifyTls] of [[`https://localhost:${port}`, undefined], [partner.url, true]] as const) {
      const r = await drain(core, { baseUrl, verifyTls });
      expect(r.error?.kind).toBe("temporary");
      expect(r.error?.message).toMatch(/cert|self.signed/i);
    }
    expect(partner.pulls).toHaveLength(2); // the refused handshakes never reached the handler
  });

  test("madexchanger: GET /pull?domain=D per domain, lenient items, ack with their ids, delivery ids scoped to the partner", async () => {
    const { core, seen } = stubCore(byLocalPart);
    partner = newPartner({ bareArrayFor: ["b.test"] });
    partner.add(msg("17", ["bob@chat.test", "carol@chat.test"], { domain: "chat.test" }), msg("18", ["u@b.test"], { domain: "b.test" }));
    const r = await drain(core, { protocol: "madexchanger", domains: ["chat.test", "b.test"] });
    expect(r).toMatchObject({ pulled: 2, delivered: 2, relayed: 1, batches: 4, drained: true });
    expect(r.error).toBeUndefined();
    expect(partner.pulls.map((p) => [p.path, p.domain, p.wait])).toEqual([
      ["/pull", "chat.test", null], ["/pull", "chat.test", null], ["/pull", "b.test", null], ["/pull", "b.test", null],
    ]);
    expect(partner.acks).toEqual([["17"], ["18"]]);
    const host = new URL(partner.url).host;
    expect(seen.map((e) => [e.deliveryId, e.rcpts])).toEqual([
      [`madexchanger:${host}:17`, ["bob@chat.test", "carol@chat.test"]], [`madexchanger:${host}:18`, ["u@b.test"]],
    ]);
    expect(partner.held.size).toBe(0);
  });

  test("madexchanger without a domain: configuration error", async () => {
    const r = await drain(stubCore(byLocalPart).core, { protocol: "madexchanger" });
    expect(r.error?.kind).toBe("config");
  });
});

// ---------------------------------------------------------------------------------------------

describe("madmail pull-client (compiled binary)", () => {
  const tokenFile = () => {
    const f = join(sb.dir, "hub.token");
    writeFileSync(f, `${TOKEN}\nsecond line ignored\n`);
    chmodSync(f, 0o600);
    return f;
  };
  /** A pull-client run, returned once it holds the lock and waits on the partner's first (slow) answer. */
  async function runHoldingTheLock(p: FakePartner) {
    const run = Bun.spawn([sb.bin, "pull-client", "--url", p.url, "--token-file", tokenFile()], {
      cwd: sb.dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", MADMAIL_DB: sb.db }, stdout: "pipe", stderr: "pipe",
    });
    while (!p.pulls.length) await Bun.sleep(20);
    return run;
  }
  const SUMMARY = /^pulled (\d+), delivered (\d+), relayed (\d+), refused (\d+)(?:, deferred \d+)?(?:, duplicates \d+)? in \d+\.\ds\n$/;
  const pc = (args: string[], env?: Record<string, string>) => sb.run(["pull-client", ...args], { env });

  test("nothing to pull: exit 0, one summary line, no lock left behind", async () => {
    const r = await pc(["--url", partner!.url, "--token-file", tokenFile()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^pulled 0, delivered 0, relayed 0, refused 0 in \d+\.\ds\n$/);
    expect(existsSync(join(sb.dir, "data", "pull-client.lock"))).toBe(false);
  });

  test("with mail: exit 0, delivered to Maildir, acked", async () => {
    partner!.add(msg("b1"), msg("b2", ["bob@chat.test", "carol@chat.test"]), msg("b3", ["x@remote.test"]));
    const r = await pc(["--url", partner!.url + "/", "--token-file", tokenFile()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.match(SUMMARY)?.slice(1)).toEqual(["3", "3", "1", "0"]);
    expect(maildir("bob@chat.test")).toHaveLength(2);
    expect(partner!.held.size).toBe(0);
  });

  test("token from MADMAIL_PULL_TOKEN; --json prints one document with the counts", async () => {
    partner!.add(msg("j1"));
    const r = await pc(["--url", partner!.url, "--json"], { MADMAIL_PULL_TOKEN: TOKEN });
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(Object.keys(doc)).toEqual(["pulled", "delivered", "relayed", "refused", "deferred", "duplicates", "seconds", "error"]);
    expect(doc).toMatchObject({ pulled: 1, delivered: 1, relayed: 0, refused: 0, deferred: 0, error: null });
    expect(typeof doc.seconds).toBe("number");
  });

  test("--json on failure carries the error; exit 75", async () => {
    partner = newPartner({ status: 503 });
    const r = await pc(["--url", partner.url, "--json", "--token-file", tokenFile()]);
    expect(r.code).toBe(75);
    expect(JSON.parse(r.stdout)).toMatchObject({ pulled: 0, error: { kind: "temporary", message: `GET ${partner.url}/exchanger/pull: 503 status 503` } });
  });

  test.each([
    ["500", { status: 500 }],
    ["429", { status: 429 }],
  ])("partner answers %s: exit 75", async (_, opts) => {
    partner = newPartner(opts);
    const r = await pc(["--url", partner.url, "--token-file", tokenFile()]);
    expect(r.code).toBe(75);
    expect(r.stdout).toMatch(SUMMARY);
    expect(r.stderr).toStartWith(`madmail: GET ${partner.url}/exchanger/pull: `);
  });

  test("partner down: exit 75", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const r = await pc(["--url", url, "--token-file", tokenFile()]);
    expect(r.code).toBe(75);
    expect(r.stderr).toContain("ECONNREFUSED");
  });

  test("some recipients deferred: exit 75 (stubbed with an unusable item)", async () => {
    partner!.add(msg("x", []));
    const r = await pc(["--url", partner!.url, "--token-file", tokenFile()]);
    expect(r.code).toBe(75);
    expect(r.stdout).toMatch(/^pulled 1, delivered 0, relayed 0, refused 0, deferred 1 in /);
  });

  test("401: exit 1", async () => {
    const f = join(sb.dir, "wrong.token");
    writeFileSync(f, "wrong\n", { mode: 0o600 });
    const r = await pc(["--url", partner!.url, "--token-file", f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("401");
    expect(r.stderr).toContain("does not accept our token");
  });

  test.each([
    ["bad URL", ["--url", "ftp://hub.example", "--token-file", "TOKEN"], 1, 'madmail: invalid partner URL "ftp://hub.example": expected http(s)://HOST[:PORT][/PATH], the base its pull endpoint hangs off\n'],
    ["missing token file", ["--url", "http://127.0.0.1:9", "--token-file", "missing.token"], 1, "madmail: cannot read token file missing.token: ENOENT\n"],
    ["empty token file", ["--url", "http://127.0.0.1:9", "--token-file", "empty.token"], 1, "madmail: token file empty.token is empty (expected the token on its first line)\n"],
    ["no token at all", ["--url", "http://127.0.0.1:9"], 2, "madmail: no token: give --token-file FILE or set MADMAIL_PULL_TOKEN\n"],
    ["madexchanger without --domain", ["--url", "http://127.0.0.1:9", "--protocol", "madexchanger", "--token-file", "TOKEN"], 2,
      "madmail: --protocol madexchanger needs --domain D (the domains whose mail to pull)\n"],
    ["--domain with madmail", ["--url", "http://127.0.0.1:9", "--domain", "a.test", "--token-file", "TOKEN"], 2,
      "madmail: --domain is for --protocol madexchanger; a madmail partner knows what it holds for us\n"],
    ["bad --max-time", ["--url", "http://127.0.0.1:9", "--max-time", "0", "--token-file", "TOKEN"], 2,
      'madmail: invalid --max-time "0": expected whole seconds from 1 to 86400\n'],
  ])("%s: refused before any pull", async (_, args, code, stderr) => {
    writeFileSync(join(sb.dir, "empty.token"), "\n", { mode: 0o600 });
    const r = await pc(args.map((a) => (a === "TOKEN" ? tokenFile() : a)));
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code, stdout: "", stderr });
  });

  test("a token file others can read earns a warning", async () => {
    const f = tokenFile();
    chmodSync(f, 0o644);
    const r = await pc(["--url", partner!.url, "--token-file", f]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`madmail: warning: token file ${f} is readable by other users; chmod 600 ${f}\n`);
  });

  test("--once: a single pull round", async () => {
    partner!.add(...Array.from({ length: 60 }, (_, i) => msg(`once${i}`)));
    const r = await pc(["--url", partner!.url, "--token-file", tokenFile(), "--once"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^pulled 50, delivered 50, /);
    expect(partner!.pulls).toHaveLength(1);
    expect(partner!.held.size).toBe(10);
  });

  test("two runs at once: the second says who holds the lock and exits 0 at once", async () => {
    partner = newPartner({ delayMs: 1500 });
    partner.add(msg("slow"));
    const lock = join(sb.dir, "data", "pull-client.lock");
    const first = await runHoldingTheLock(partner);
    expect(readFileSync(lock, "utf8")).toBe(`${first.pid}\n`);
    const t0 = performance.now();
    const second = await pc(["--url", partner.url, "--token-file", tokenFile()]);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(second).toEqual({ code: 0, stdout: `another pull-client (pid ${first.pid}) holds ${lock}; nothing to do\n`, stderr: "" });
    expect(await first.exited).toBe(0);
    expect(await new Response(first.stdout).text()).toMatch(/^pulled 1, delivered 1, /);
    expect(existsSync(lock)).toBe(false);
    expect(partner.pulls).toHaveLength(2); // the first run's two pulls; none from the second
  });

  test("--json while another run holds the lock: zero counts and who holds it", async () => {
    partner = newPartner({ delayMs: 1500 });
    partner.add(msg("slow"));
    const lock = join(sb.dir, "data", "pull-client.lock");
    const first = await runHoldingTheLock(partner);
    const r = await pc(["--url", partner.url, "--token-file", tokenFile(), "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ pulled: 0, delivered: 0, relayed: 0, refused: 0, deferred: 0, duplicates: 0, seconds: 0, error: null, locked_by: first.pid });
    expect(readFileSync(lock, "utf8")).toBe(`${first.pid}\n`);
    expect(await first.exited).toBe(0);
    expect(partner.pulls).toHaveLength(2); // the first run's two pulls; none from the second
  });

  test("--lock FILE; a file left by a run that died does not block, even when its pid now names a live process", async () => {
    // The pid of a killed run may belong to another process after a reboot: this test's own pid
    // stands for that. Only a held flock counts.
    const lock = join(sb.dir, "custom.lock");
    writeFileSync(lock, `${process.pid}\n`);
    partner!.add(msg("s1"));
    const r = await pc(["--url", partner!.url, "--token-file", tokenFile(), "--lock", lock]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatch(/^pulled 1, delivered 1, /);
    expect(existsSync(lock)).toBe(false);
  });

  test("a run killed with SIGKILL leaves no lock that holds up the next", async () => {
    partner = newPartner({ delayMs: 5000 });
    partner.add(msg("k1"));
    const lock = join(sb.dir, "data", "pull-client.lock");
    const first = await runHoldingTheLock(partner);
    expect(readFileSync(lock, "utf8")).toBe(`${first.pid}\n`);
    first.kill("SIGKILL");
    await first.exited;
    expect(existsSync(lock)).toBe(true); // left behind, with the dead run's pid
    partner = newPartner();
    partner.add(msg("k2"));
    const r = await pc(["--url", partner.url, "--token-file", tokenFile()]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatch(/^pulled 1, delivered 1, /);
    expect(existsSync(lock)).toBe(false);
  });

  test("--protocol madexchanger with --domain (repeated and comma list)", async () => {
    partner!.add(msg("1", ["bob@chat.test"], { domain: "chat.test" }), msg("2", ["carol@chat.test"], { domain: "other.test" }), msg("3", ["bob@chat.test"], { domain: "third.test" }));
    const r = await pc(["--url", partner!.url, "--token-file", tokenFile(), "--protocol", "madexchanger", "--domain", "chat.test,other.test", "--domain", "third.test"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^pulled 3, delivered 3, /);
    expect(new Set(partner!.pulls.map((p) => p.domain))).toEqual(new Set(["chat.test", "other.test", "third.test"]));
    expect(maildir("bob@chat.test")).toHaveLength(2);
  });
});

describe("against a real madmail pull endpoint", () => {
  let hub: ServerHandle | undefined;
  afterEach(async () => {
    await hub?.stop();
    hub?.box.cleanup();
    hub = undefined;
  });

  test("mail held on the hub for us is pulled, delivered once and acknowledged there", async () => {
    hub = await startServe({
      setup: [["init", "--domain", "hub.test"], ["user", "add", "alice@hub.test"], ["exchanger", "add", "leaf", "https://leaf.example", "--mode", "pull", "--domains", "chat.test"]],
    });
    const t = await hub.box.run(["exchanger", "token", "leaf"]);
    expect(t.code).toBe(0);
    const f = join(sb.dir, "hub.token");
    writeFileSync(f, t.stdout, { mode: 0o600 });
    for (const to of ["bob@chat.test", "carol@chat.test"]) {
      const s = await hub.box.run(["send", "--from", "alice@hub.test", "--to", to], { stdin: ENCRYPTED });
      expect(s.code).toBe(0);
    }
    // Wait until the hub's worker has put both aside for the pull.
    for (let i = 0; i < 100; i++) {
      const q = JSON.parse((await hub.box.run(["queue", "list", "--json"])).stdout) as { route?: string | null }[];
      if (q.length === 2 && q.every((d) => d.route === "exchanger:leaf")) break;
      await Bun.sleep(100);
    }
    const r = await sb.run(["pull-client", "--url", hub.url, "--token-file", f, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ pulled: 2, delivered: 2, relayed: 0, refused: 0, deferred: 0, error: null });
    expect(maildir("bob@chat.test")).toHaveLength(1);
    expect(maildir("carol@chat.test")).toHaveLength(1);
    const again = await sb.run(["pull-client", "--url", hub.url, "--token-file", f, "--json"]);
    expect(JSON.parse(again.stdout)).toMatchObject({ pulled: 0, error: null });
  });
});

