// Outbound delivery by DNS MX records (DESIGN.md §5, "direct"), end to end with the compiled
// binary: madmail A runs in its own network namespace (10.99.0.1, domain a.test) whose resolver is
// a private dnsmasq, and delivers to peers found only through MX/A records:
//   b.test      MX mx.b.test   -> 10.99.0.2  Postfix on :25 (nothing on 443/80: https -> http -> smtp)
//   c.test      MX mx.c.test   -> 10.99.0.3  another madmail, /mxdeliv over HTTPS :443 (self-signed)
//   pref.test   MX 10 mx1 -> 10.99.0.9 (a host where nothing listens), MX 20 mx2 -> 10.99.0.2 (Postfix)
//   down.test   MX 10 mx1 -> 10.99.0.99 (no such host: "No route to host" after ~3 s), MX 20 mx2 -> Postfix
//   nullmx.test null MX (RFC 7505); nosuch.test does not exist; nomx.test only an A record (10.99.0.2)
// The namespaces have no default route: nothing leaves the machine. Needs root, iproute2, dnsmasq,
// Postfix (.ci/install-peers.sh) and dist/madmail (build first).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { sandbox, SOURCE_BINARY, type Sandbox } from "../helpers/binary.ts";
import { netnsStatus, netnsUp, startPostfixIn, type Netns, type NsPostfix } from "../helpers/netns.ts";
import { havePeers, makeCert, peerDir } from "../helpers/peers.ts";

const SAMPLE = readFileSync(resolve(import.meta.dir, "../fixtures/samples/pass-deltachat-2.57-chat.eml"));
const SAMPLE_MESSAGE_ID = "574cd5df-0463-47cb-a084-c0bb253c1d2a@localhost";

/** idle: a namespace where nothing listens (connection refused at once); gone: no host at all (no ARP answer). */
const IP = { a: "10.99.0.1", b: "10.99.0.2", c: "10.99.0.3", idle: "10.99.0.9", gone: "10.99.0.99" };
const RECORDS = [
  "mx-host=a.test,mx.a.test,10",
  `host-record=mx.a.test,${IP.a}`,
  "mx-host=b.test,mx.b.test,10",
  `host-record=mx.b.test,${IP.b}`,
  "mx-host=c.test,mx.c.test,10",
  `host-record=mx.c.test,${IP.c}`,
  // the less preferred one first: the order of the answer must not matter
  "mx-host=pref.test,mx2.pref.test,20",
  "mx-host=pref.test,mx1.pref.test,10",
  `host-record=mx1.pref.test,${IP.idle}`,
  `host-record=mx2.pref.test,${IP.b}`,
  "mx-host=down.test,mx1.down.test,10",
  "mx-host=down.test,mx2.down.test,20",
  `host-record=mx1.down.test,${IP.gone}`,
  `host-record=mx2.down.test,${IP.b}`,
  // null MX: one record, exchange "." (dnsmasq answers "0 .")
  "mx-host=nullmx.test,.,0",
  `host-record=nomx.test,${IP.b}`,
];

const why = [
  ...netnsStatus().missing,
  ...(havePeers().postfix ? [] : havePeers().missing),
  ...(existsSync(SOURCE_BINARY) ? [] : [`${SOURCE_BINARY} missing (bun build.ts)`]),
];
if (why.length) console.warn(`mx-routing tests skipped: ${why.join("; ")}`);

interface Madmail {
  box: Sandbox;
  proc: Bun.Subprocess;
  log: string;
  logs(): string;
  stop(): Promise<void>;
}

/** Sets up a state file with the CLI (outside the namespace: it only touches the file), then runs `serve` inside the host's namespace. */
async function startMadmail(net: Netns, host: string, domain: string, users: string[], settings: [string, string][], listen: string[], ready: [string, number], more: string[][] = []): Promise<Madmail> {
  const box = sandbox();
  net.adopt(box.dir);
  const cli = async (args: string[], stdin?: string) => {
    const r = await box.run(args, { stdin });
    if (r.code !== 0) throw new Error(`madmail ${args.join(" ")} failed (${r.code}): ${r.stderr}${r.stdout}`);
    return r;
  };
  try {
    await cli(["init", "--domain", domain]);
    for (const u of users) await cli(["user", "add", u, "--password-stdin"], "secret-password-1\n");
    for (const [k, v] of settings) await cli(["config", "set", k, v]);
    for (const args of more) await cli(args);
  } catch (e) {
    box.cleanup();
    throw e;
  }
  const log = join(box.dir, "serve.log");
  const proc = net.spawn(host, [box.bin, "serve", "--smtp", "off", "--lmtp", "off", "--submission", "off", "--submissions", "off", ...listen], {
    cwd: box.dir,
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: box.dir, NO_COLOR: "1", MADMAIL_DB: box.db },
    log,
  });
  const logs = () => (existsSync(log) ? readFileSync(log, "utf8") : "");
  const m: Madmail = {
    box, proc, log, logs,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await proc.exited;
        clearTimeout(t);
      }
    },
  };
  try {
    await net.waitTcp(host, ready[0], ready[1]);
  } catch (e) {
    await m.stop();
    const text = logs();
    box.cleanup();
    throw new Error(`madmail serve in ${host} did not come up: ${(e as Error).message}\n${text}`);
  }
  return m;
}

interface DeliveryRow {
  id: string;
  state: string;
  route: string | null;
  last_error: string | null;
  tries: number;
}

interface AttemptRow {
  transport: string;
  endpoint: string;
  outcome: string;
  detail: string | null;
  ms: number | null;
}

function query<T>(dbPath: string, sql: string, ...params: string[]): T[] {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.query(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

function attemptsOf(dbPath: string, deliveryId: string): AttemptRow[] {
  return query<AttemptRow>(dbPath, "SELECT transport, endpoint, outcome, detail, ms FROM delivery_attempts WHERE delivery_id = ? ORDER BY id", deliveryId);
}

function endpointCache(dbPath: string, domain: string): { transport: string; endpoint: string } | undefined {
  return query<{ transport: string; endpoint: string }>(dbPath, "SELECT transport, endpoint FROM endpoint_cache WHERE domain = ?", domain)[0];
}

/** Files in new/ of a madmail Maildir (<data dir>/mail/<address>/new). */
function madmailMailbox(box: Sandbox, address: string): string[] {
  const d = join(box.dir, "data", "mail", address, "new");
  return existsSync(d) ? readdirSync(d).map((f) => join(d, f)) : [];
}

/** Tags of the first DKIM-Signature header (unfolded), or null. */
function dkimTags(message: string): Record<string, string> | null {
  const head = message.slice(0, message.search(/\r?\n\r?\n/));
  const m = /^DKIM-Signature:((?:.*)(?:\r?\n[ \t].*)*)/im.exec(head);
  if (!m) return null;
  const tags: Record<string, string> = {};
  for (const part of m[1]!.replace(/\s+/g, "").split(";")) {
    const i = part.indexOf("=");
    if (i > 0) tags[part.slice(0, i)] = part.slice(i + 1);
  }
  return tags;
}

describe.skipIf(why.length > 0)("outbound delivery by MX records (network namespaces)", () => {
  let net: Netns | undefined;
  let postfix: NsPostfix | undefined;
  let a: Madmail | undefined;
  let c: Madmail | undefined;
  const dirs: string[] = [];

  beforeAll(async () => {
    net = await netnsUp({
      hosts: [{ name: "a", ip: IP.a }, { name: "b", ip: IP.b }, { name: "c", ip: IP.c }, { name: "idle", ip: IP.idle }],
      records: RECORDS,
    });
    const pfDir = peerDir("mxb");
    const tlsDir = peerDir("mxtls");
    dirs.push(pfDir, tlsDir);
    net.adopt(pfDir);
    net.adopt(tlsDir);
    const [pfCert, cCert] = await Promise.all([makeCert(join(tlsDir, "b"), "mx.b.test", [`IP:${IP.b}`]), makeCert(join(tlsDir, "c"), "mx.c.test", ["DNS:c.test", `IP:${IP.c}`])]);
    const n = net;
    // Started side by side; whatever did start is kept for afterAll even when another one failed.
    const started = await Promise.allSettled([
      startPostfixIn(n, {
        dir: pfDir, host: "b", hostname: "mx.b.test", tls: pfCert,
        domains: ["b.test", "pref.test", "down.test", "nomx.test"], mailboxes: ["bob@b.test", "pat@pref.test", "dan@down.test", "nora@nomx.test"],
      }).then((p) => (postfix = p)),
      startMadmail(n, "c", "c.test", ["carol@c.test"], [["hostname", "mx.c.test"], ["tls.cert", cCert.cert], ["tls.key", cCert.key]],
        ["--http", "127.0.0.1:8080", "--https", `${IP.c}:443`], [IP.c, 443]).then((m) => (c = m)),
      startMadmail(n, "a", "a.test", ["alice@a.test"], [["hostname", "mx.a.test"], ["delivery.tls_verify", "never"]],
        ["--http", "127.0.0.1:8080", "--https", "off"], ["127.0.0.1", 8080], [["dkim", "generate", "a.test", "--selector", "mmt"]]).then((m) => (a = m)),
    ]);
    const failed = started.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled([a?.stop(), c?.stop(), postfix?.stop()]);
    if (process.env.MX_ROUTING_LOGS) {
      console.log(`--- madmail A ---\n${a?.logs()}\n--- madmail C ---\n${c?.logs()}\n--- Postfix ---\n${postfix?.logs()}\n--- dnsmasq ---\n${net?.dnsLog()}`);
    }
    await net?.down();
    a?.box.cleanup();
    c?.box.cleanup();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }, 60_000);

  /** `madmail send` from alice@a.test (CLI outside the namespace, same state file); returns the queue id. */
  async function send(to: string): Promise<string> {
    const r = await a!.box.run(["send", "--from", "alice@a.test", "--to", to], { stdin: SAMPLE });
    if (r.code !== 0) throw new Error(`madmail send failed (${r.code}): ${r.stderr}`);
    const id = r.stdout.trim();
    expect(id).toMatch(/^\S+$/);
    return id;
  }

  /** Waits until A's delivery row for (queue id, domain) is delivered or dead. */
  async function settled(queueId: string, domain: string, timeoutMs = 20_000): Promise<DeliveryRow & { attempts: AttemptRow[] }> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const row = query<DeliveryRow>(a!.box.db, "SELECT id, state, route, last_error, tries FROM deliveries WHERE (id = ? OR message_id = ?) AND rcpt_domain = ?", queueId, queueId, domain)[0];
      if (row && (row.state === "delivered" || row.state === "dead")) return { ...row, attempts: attemptsOf(a!.box.db, row.id) };
      if (Date.now() > end) {
        const attempts = row ? attemptsOf(a!.box.db, row.id) : [];
        throw new Error(`delivery of ${queueId} to ${domain} not settled after ${timeoutMs} ms: ${JSON.stringify(row)}\n${JSON.stringify(attempts, null, 1)}\n--- madmail A ---\n${a!.logs()}`);
      }
      await Bun.sleep(100);
    }
  }

  test("(a) no MX speaks HTTP(S): falls through https, http to SMTP with STARTTLS at the MX; Postfix stores it; the endpoint is learned", async () => {
    const id = await send("bob@b.test");
    const row = await settled(id, "b.test");
    expect(row.state).toBe("delivered");
    expect(row.route).toBe("smtp:mx.b.test:25");
    // Every HTTP candidate was tried in order and failed fast (nothing listens / b.test has no address).
    expect(row.attempts.map((x) => `${x.outcome} ${x.endpoint}`)).toEqual([
      "temporary https:https://mx.b.test/mxdeliv",
      "temporary https:https://b.test/mxdeliv",
      "temporary http:http://mx.b.test/mxdeliv",
      "delivered smtp:mx.b.test:25",
    ]);
    expect(row.attempts[0]!.detail).toContain("ECONNREFUSED");
    expect(row.attempts[1]!.detail).toMatch(/ENOTFOUND|getaddrinfo/);

    await postfix!.waitForLog(/to=<bob@b\.test>, relay=virtual.*status=sent/);
    // madmail took the STARTTLS Postfix offered (opportunistic; the self-signed cert is accepted with tls_verify never)
    // (Postfix finds the client's name through dnsmasq's PTR record of the host-record)
    expect(postfix!.logs()).toMatch(/TLS connection established from mx\.a\.test\[10\.99\.0\.1\]/);
    const files = postfix!.mailbox("bob@b.test");
    expect(files.length).toBe(1);
    const stored = readFileSync(files[0]!, "utf8");
    expect(stored).toContain(SAMPLE_MESSAGE_ID);
    expect(stored).toContain("-----BEGIN PGP MESSAGE-----");
    expect(stored).toMatch(/^Received: from mx\.a\.test \(mx\.a\.test \[10\.99\.0\.1\]\)\s+\(using TLS/m);
    expect(dkimTags(stored)).toMatchObject({ d: "a.test", s: "mmt", a: "rsa-sha256", c: "relaxed/relaxed" });

    expect(endpointCache(a!.box.db, "b.test")).toEqual({ transport: "smtp", endpoint: "mx.b.test:25" });

    // The next message for b.test goes straight to the learned endpoint.
    const id2 = await send("bob@b.test");
    const row2 = await settled(id2, "b.test");
    expect(row2.state).toBe("delivered");
    expect(row2.route).toBe("smtp:mx.b.test:25");
    expect(row2.attempts.map((x) => `${x.outcome} ${x.endpoint}`)).toEqual(["delivered smtp:mx.b.test:25"]);
    const end = Date.now() + 10_000;
    while (postfix!.mailbox("bob@b.test").length < 2 && Date.now() < end) await Bun.sleep(100);
    expect(postfix!.mailbox("bob@b.test").length).toBe(2);
  });

  test("(b) the MX is another madmail serving HTTPS: delivered by POST https://mx.c.test/mxdeliv into carol's Maildir", async () => {
    const id = await send("carol@c.test");
    const row = await settled(id, "c.test");
    expect(row.state).toBe("delivered");
    expect(row.route).toBe("https:https://mx.c.test/mxdeliv");
    expect(row.attempts.map((x) => `${x.outcome} ${x.endpoint}`)).toEqual(["delivered https:https://mx.c.test/mxdeliv"]);
    expect(endpointCache(a!.box.db, "c.test")).toEqual({ transport: "https", endpoint: "https://mx.c.test/mxdeliv" });

    const end = Date.now() + 10_000;
    while (madmailMailbox(c!.box, "carol@c.test").length === 0 && Date.now() < end) await Bun.sleep(100);
    const files = madmailMailbox(c!.box, "carol@c.test");
    expect(files.length).toBe(1);
    const stored = readFileSync(files[0]!, "utf8");
    expect(stored).toContain(SAMPLE_MESSAGE_ID);
    expect(stored).toContain("-----BEGIN PGP MESSAGE-----");
    expect(dkimTags(stored)).toMatchObject({ d: "a.test", s: "mmt" });
  });

  test("(c) MX preference: the preferred MX refuses every connection, the second one takes the mail", async () => {
    const id = await send("pat@pref.test");
    const row = await settled(id, "pref.test");
    expect(row.state).toBe("delivered");
    expect(row.route).toBe("smtp:mx2.pref.test:25");
    const tried = row.attempts.map((x) => `${x.outcome} ${x.endpoint}`);
    // mx1 (preference 10) first, every transport refused; then mx2 (20)
    expect(tried.slice(0, 4)).toEqual([
      "temporary https:https://mx1.pref.test/mxdeliv",
      "temporary https:https://pref.test/mxdeliv",
      "temporary http:http://mx1.pref.test/mxdeliv",
      "temporary smtp:mx1.pref.test:25",
    ]);
    for (const x of row.attempts.slice(0, 4)) if (x.endpoint.includes("mx1")) expect(x.detail).toContain("ECONNREFUSED");
    expect(tried.slice(4)).toEqual(["temporary https:https://mx2.pref.test/mxdeliv", "temporary http:http://mx2.pref.test/mxdeliv", "delivered smtp:mx2.pref.test:25"]);
    await postfix!.waitForLog(/to=<pat@pref\.test>, relay=virtual.*status=sent/);
    expect(postfix!.mailbox("pat@pref.test").length).toBe(1);
    expect(endpointCache(a!.box.db, "pref.test")).toEqual({ transport: "smtp", endpoint: "mx2.pref.test:25" });
  });

  test("(c2) MX preference: the preferred MX host does not exist on the network (no route to host), the second one takes the mail", async () => {
    const t0 = Date.now();
    const id = await send("dan@down.test");
    const row = await settled(id, "down.test", 40_000);
    expect(row.state).toBe("delivered");
    expect(row.route).toBe("smtp:mx2.down.test:25");
    const mx1 = row.attempts.filter((x) => x.endpoint.includes("mx1.down.test"));
    // After the first connection-level failure the host's other transports are skipped.
    expect(mx1.map((x) => `${x.outcome} ${x.endpoint}`)).toEqual([
      "temporary https:https://mx1.down.test/mxdeliv",
      "note http:http://mx1.down.test/mxdeliv",
      "note smtp:mx1.down.test:25",
    ]);
    expect(mx1[1]!.detail).toBe("skipped: mx1.down.test unreachable");
    // Each try waits for ARP to give up (~3 s) before the kernel says EHOSTUNREACH. Bun 1.4.5
    // reports that as ECONNREFUSED (oven-sh/bun#37093), so the time taken is what proves that the
    // host was unreachable rather than refusing.
    expect(mx1[0]!.detail).toMatch(/EHOSTUNREACH|ECONNREFUSED|ETIMEDOUT|timed out|route to host/i);
    expect(mx1[0]!.ms!).toBeGreaterThan(2_000);
    expect(row.attempts.at(-1)!.endpoint).toBe("smtp:mx2.down.test:25");
    await postfix!.waitForLog(/to=<dan@down\.test>, relay=virtual.*status=sent/);
    expect(postfix!.mailbox("dan@down.test").length).toBe(1);
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 45_000);

  test("(d) null MX and a nonexistent domain are dead at once (DSN to the sender); a domain with only an A record is its own MX", async () => {
    const dsnBefore = madmailMailbox(a!.box, "alice@a.test").length;
    const [nullId, nosuchId, nomxId] = [await send("nil@nullmx.test"), await send("who@nosuch.test"), await send("nora@nomx.test")];

    const nul = await settled(nullId, "nullmx.test");
    expect(nul.state).toBe("dead");
    expect(nul.tries).toBe(1);
    expect(nul.last_error).toMatch(/null MX/);
    expect(nul.attempts.map((x) => x.transport)).toEqual(["router"]); // no connection attempted

    const nosuch = await settled(nosuchId, "nosuch.test");
    expect(nosuch.state).toBe("dead");
    expect(nosuch.tries).toBe(1);
    expect(nosuch.last_error).toMatch(/no MX and no address/);
    expect(nosuch.attempts.map((x) => x.transport)).toEqual(["router"]);

    const nomx = await settled(nomxId, "nomx.test");
    expect(nomx.state).toBe("delivered");
    expect(nomx.route).toBe("smtp:nomx.test:25");
    expect(nomx.attempts.map((x) => `${x.outcome} ${x.endpoint}`)).toEqual([
      "temporary https:https://nomx.test/mxdeliv",
      "temporary http:http://nomx.test/mxdeliv",
      "delivered smtp:nomx.test:25",
    ]);
    await postfix!.waitForLog(/to=<nora@nomx\.test>, relay=virtual.*status=sent/);
    expect(postfix!.mailbox("nora@nomx.test").length).toBe(1);

    // alice (local sender) gets one delivery status notification per dead destination
    const end = Date.now() + 10_000;
    while (madmailMailbox(a!.box, "alice@a.test").length < dsnBefore + 2 && Date.now() < end) await Bun.sleep(100);
    const dsns = madmailMailbox(a!.box, "alice@a.test").map((f) => readFileSync(f, "utf8"));
    expect(dsns.length).toBe(dsnBefore + 2);
    const all = dsns.join("\n");
    expect(all).toContain("multipart/report");
    expect(all).toContain("nil@nullmx.test");
    expect(all).toContain("who@nosuch.test");
  });
});
