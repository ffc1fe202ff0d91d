// Outbound relay benchmark (not a test: bun test ignores *.bench.ts).
//
//   ./node_modules/.bin/bun test/bench/relay.bench.ts [--rounds 3] [--messages 5000] [--sessions 20]
//       [--warm-up 10000] [--rewarm 1000] [--latency 500] [--backlog 100000] [--concurrency 32] [--per-destination 32]
//       [--quiet-wait 45] [--only throughput,latency,backlog,profile] [--keep-profiles DIR] [--no-results]
//       [--systems madmail,madmail_nodkim,madmail_defaults,postfix_sink,postfix_sink_smtp_source,postfix_maildir]
//
// MADMAIL_BENCH_BIN=/path/to/madmail runs another build instead (to compare builds one after another).
// Needs dist/madmail (./node_modules/.bin/bun build.ts), postfix + smtp-source + smtp-sink, hyperfine
// (optional; else timed runs), and root (the Postfix master starts as root). Everything listens on
// 127.0.0.1 and lives in temp dirs that are removed at the end; every process started here is
// stopped by PID (madmail, smtp-sink) or by its instance's own stop (Postfix), also on failure.
//
// 1. Throughput, end to end. madmail: A (sender; alice@a.test; submission with AUTH PLAIN, DKIM key
//    for a.test, `endpoint-cache set b.test http://127.0.0.1:B/mxdeliv`) relays to B (bob@b.test,
//    durable Maildir) over POST /mxdeliv. Postfix: a throw-away Postfix relays b.test to an
//    smtp-sink. One load generator for both (below): SESSIONS parallel SMTP sessions, each sends
//    MESSAGES/SESSIONS messages over the same connection (PIPELINING of MAIL/RCPT/DATA); bodies are
//    real PGP/MIME (SKESK + SEIPD made with openpgp) of 1,024 and 4,096 bytes. The sessions are opened
//    (connect, EHLO, and on madmail AUTH) before the clock and the CPU counters start; the setup
//    time and A's CPU for it are in each run line. accepted/s = N / time
//    until the last 250 after DATA; delivered/s = N / time until the last message reached the far end
//    (madmail: file in B's Maildir new/, counted with inotify and checked with readdir; Postfix:
//    smtp-sink's message counter). Informational, in the same rounds: `smtp-source -s SESSIONS -d -F`
//    against the same Postfix (the tool the issue's 630 msg/s came from), and Postfix relaying to a
//    second Postfix that stores in a virtual(8) Maildir (receiver doing durable storage like B), and
//    madmail with A2, a copy of A without a DKIM key (Postfix does not sign), and with A3, a copy of
//    A with the queue settings at their defaults (queue.concurrency 20, queue.per_destination 4).
//    ROUNDS rounds; in each, per size, madmail and Postfix -> smtp-sink back to back (alternating
//    which goes first), then the informational systems; medians, and the compared pair's ratio
//    round by round.
// 2. Latency: one session, one message at a time, the next only after the file is in the Maildir;
//    LATENCY messages of 1 KB (after 20 unmeasured ones). Measured from writing the end-of-data dot
//    to (a) the 250 reply and (b) the inotify event of the file in B's Maildir new/. The same for
//    Postfix -> Postfix (the relay instance, route c.test to the second instance's virtual Maildir).
// 3. Backlog: a fresh A whose state file holds BACKLOG deferred deliveries (bun:sqlite, one
//    transaction), times `madmail queue list` (first page) and `madmail queue stats`, then runs
//    `madmail serve` on it: RSS after 10 s idle, then `madmail queue flush` with the peer unreachable
//    (every domain rewritten to a closed port) and RSS while the worker churns through retries.
// 4. Profile: A and B run from source under `bun --cpu-prof` for one 1 KB throughput run; the top
//    self-time functions are summarised (this run is slower: the profiler samples every 1 ms).
// Prints a markdown report and writes it into test/bench/RESULTS.md between the relay.bench.ts
// markers (--no-results skips that).
import { settingsRegistry } from "../../src/db/settings.ts";
import { Database } from "bun:sqlite";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, watch, writeFileSync, type FSWatcher } from "node:fs";
import { connect, type Socket } from "node:net";
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as openpgp from "openpgp";
import { freePort, havePeers, peerDir, startPostfix, type PostfixInstance } from "../helpers/peers.ts";
import {
  BIN, ENV, PATH, childUsage, collectOutput, countFiles, createCleanup, dieWith, finish, fmtDec, fmtInt, hyperfine, loadCpuProfile, loadText,
  machineBusy, machineLine, madmailCli, madmailHead, madmailEnv, median, memStatus, newMadmailState, now, percentile, postfixCpu, problemsBlock,
  procCpu, profileTable, threadsByName, threadsDelta, queueId, requirePositiveIntegers, sh, sleep, stopProc, tempDirFilesystem, timeRuns, verdict, virtualMaildir, waitPort,
  benchRoot, createProbeUs, fsyncSampler, ioStall, ioStallText, waitDiskQuiet, waitQuiet as waitQuietFor, type CpuProfile, type MadmailState,
} from "./_lib.ts";

const SENDER = "alice@a.test";
const SENDER_PASS = "bench-pw";
const RCPT = "bob@b.test";
/** Postfix -> Postfix path: the relay instance routes c.test to the second instance's Maildir. */
const RCPT_PF2 = "bob@c.test";
const SIZES = [1024, 4096] as const;
type Size = (typeof SIZES)[number];

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    messages: { type: "string", default: "5000" },
    sessions: { type: "string", default: "20" },
    "warm-up": { type: "string", default: "10000" },
    rewarm: { type: "string", default: "1000" },
    latency: { type: "string", default: "500" },
    backlog: { type: "string", default: "100000" },
    concurrency: { type: "string", default: "32" },
    "per-destination": { type: "string", default: "32" },
    "quiet-wait": { type: "string", default: "45" },
    only: { type: "string", default: "throughput,latency,backlog,profile" },
    // throughput runs to do (for quick comparisons; the report's ratios need madmail and postfix_sink)
    systems: { type: "string", default: "madmail,madmail_nodkim,madmail_defaults,postfix_sink,postfix_sink_smtp_source,postfix_maildir" },
    "no-results": { type: "boolean", default: false },
    // copy the .cpuprofile files of the profile part here (they are in a temp dir otherwise)
    "keep-profiles": { type: "string" },
  },
});
const ROUNDS = Number(values.rounds);
const N = Number(values.messages);
const SESSIONS = Number(values.sessions);
/**
 * Messages per size through each server before the first measured run. JSC keeps compiling
 * (its JITWorker threads) until the hot code has run often enough for its top tier: after 2,000
 * messages those threads still took 13-23% of A's CPU in the measured runs; a serve that runs
 * for days pays that once. Each run line shows what they took in it (jit_threads).
 */
const WARM = Number(values["warm-up"]);
/** Messages through a system right before each of its measured runs (0: none); see rewarm(). */
const REWARM = Number(values.rewarm);
const LAT_N = Number(values.latency);
const BACKLOG = Number(values.backlog);
const CONCURRENCY = Number(values.concurrency);
const PER_DEST = Number(values["per-destination"]);
const QUIET_WAIT = Number(values["quiet-wait"]);
const PARTS = new Set(values.only!.split(",").map((s) => s.trim()));
const SYSTEMS = new Set(values.systems!.split(",").map((s) => s.trim()));
/** "nearly idle": busy CPU of the whole machine over 1 s, in cores */
const QUIET_CORES = 0.3;
const COMMAND = ["./node_modules/.bin/bun", "test/bench/relay.bench.ts", ...process.argv.slice(2)].join(" ");
const GOAL_RATIO = 2;
/** What A3 runs with: the settings' defaults, as `config list` shows them. */
const QUEUE_DEFAULTS = `${settingsRegistry["queue.concurrency"].default} / ${settingsRegistry["queue.per_destination"].default}`;
const NPROC = Number(sh(["nproc"])) || cpus().length;
const GOAL_P50 = 5;
const GOAL_P99 = 25;
const GOAL_LIST_S = 0.5;
const GOAL_STATS_S = 1;
const GOAL_RSS_MB = 200;

const die: (msg: string) => never = dieWith("relay.bench");
const SMTP_SOURCE = Bun.which("smtp-source", { PATH });
const SMTP_SINK = Bun.which("smtp-sink", { PATH });
const HYPERFINE = Bun.which("hyperfine", { PATH });
if (!existsSync(BIN)) die(`${BIN} is missing: build it first with ./node_modules/.bin/bun build.ts`);
if (!SMTP_SOURCE || !SMTP_SINK) die("smtp-source/smtp-sink are not installed (apt-get install -y postfix)");
if (!havePeers().postfix) die(`cannot run a throw-away Postfix here: ${havePeers().missing.join("; ")}`);
requirePositiveIntegers({ rounds: ROUNDS, messages: N, sessions: SESSIONS, "warm-up": WARM, latency: LAT_N, backlog: BACKLOG, concurrency: CONCURRENCY, "per-destination": PER_DEST }, die);
if (N % SESSIONS) die("--messages must be a multiple of --sessions");
if (WARM < SESSIONS) die("--warm-up must be at least --sessions");
if (!Number.isInteger(REWARM) || REWARM < 0) die("--rewarm must be a whole number, 0 or more");
for (const p of PARTS) if (!["throughput", "latency", "backlog", "profile"].includes(p)) die(`--only: unknown part ${p}`);
for (const s of SYSTEMS) {
  if (!["madmail", "madmail_nodkim", "madmail_defaults", "postfix_sink", "postfix_sink_smtp_source", "postfix_maildir"].includes(s)) die(`--systems: unknown system ${s}`);
}

// ---------------------------------------------------------------------------------------------
// small helpers

/** This process (load generator + harness), in seconds. */
function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Waits (at most QUIET_WAIT s) until the machine is nearly idle; returns the busy cores of the last second. */
const waitQuiet = () => waitQuietFor({ maxS: QUIET_WAIT, cores: QUIET_CORES });

// Maildirs are never emptied between runs: the temp dirs are on ext4 without a journal here,
// where creating a file costs up to 30x more for about five minutes after many files were
// deleted (new inodes avoid the recently deleted ones; see the floor section of RESULTS.md).
// Emptying B's Maildir before each run made B pay that in the next run; each run counts the
// files it adds instead.

// ---------------------------------------------------------------------------------------------
// clean-up of everything started here

const { stoppers, tempDirs, cleanup, track } = createCleanup();

// ---------------------------------------------------------------------------------------------
// message bodies: real PGP/MIME (password-encrypted: SKESK v4 + SEIPD v1, as GnuPG's -c writes)

const MSGID_LEN = 24;
const MSGID_PLACEHOLDER = "#".repeat(MSGID_LEN);

interface Body {
  size: number;
  /** dot-stuffed, CRLF; the message is pre + id (MSGID_LEN chars) + post, then ".\r\n" */
  pre: Buffer;
  post: Buffer;
  /** the same message with a fixed Message-ID, as a file for smtp-source -F */
  file: string;
}

async function makeBody(target: number, dir: string): Promise<Body> {
  const boundary = "=-=mm-relay-bench-boundary=-=";
  const build = async (textLen: number) => {
    const text = Buffer.from(crypto.getRandomValues(new Uint8Array(Math.ceil((textLen * 3) / 4)))).toString("base64").slice(0, textLen);
    const armored = (await openpgp.encrypt({
      message: await openpgp.createMessage({ text }),
      passwords: ["relay-bench"],
      format: "armored",
      config: { preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed },
    })) as string;
    const lines = [
      `From: <${SENDER}>`,
      `To: <${RCPT}>`,
      "Subject: [...]",
      "Date: Sat, 21 Nov 2026 12:00:00 +0000",
      `Message-ID: <${MSGID_PLACEHOLDER}@a.test>`,
      "MIME-Version: 1.0",
      "Chat-Version: 1.0",
      `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";`,
      ` boundary="${boundary}"`,
      "",
      "This is an OpenPGP/MIME encrypted message (RFC 3156).",
      `--${boundary}`,
      "Content-Type: application/pgp-encrypted",
      "Content-Description: PGP/MIME version identification",
      "",
      "Version: 1",
      "",
      `--${boundary}`,
      `Content-Type: application/octet-stream; name="encrypted.asc"`,
      "Content-Description: OpenPGP encrypted message",
      `Content-Disposition: inline; filename="encrypted.asc"`,
      "",
      ...armored.replace(/\r?\n$/, "").split(/\r?\n/),
      "",
      `--${boundary}--`,
      "",
    ];
    return lines.join("\r\n");
  };
  let len = Math.max(16, target - 900);
  let msg = await build(len);
  for (let i = 0; i < 20 && Math.abs(msg.length - target) > 4; i++) {
    len = Math.max(1, len + Math.round(((target - msg.length) * 3) / 4));
    msg = await build(len);
  }
  const stuffed = msg.replace(/^\./gm, "..");
  const [pre, post] = stuffed.split(MSGID_PLACEHOLDER) as [string, string];
  const file = join(dir, `body-${target}.eml`);
  writeFileSync(file, msg.replace(MSGID_PLACEHOLDER, "fixed-id-for-smtp-source".padEnd(MSGID_LEN, "x").slice(0, MSGID_LEN)));
  return { size: msg.length, pre: Buffer.from(pre, "latin1"), post: Buffer.from(post, "latin1"), file };
}

const DOT = Buffer.from(".\r\n");
function messageBytes(body: Body, id: string): Buffer {
  return Buffer.concat([body.pre, Buffer.from(id.padEnd(MSGID_LEN, "x").slice(0, MSGID_LEN), "latin1"), body.post, DOT]);
}

// ---------------------------------------------------------------------------------------------
// the load generator: a small SMTP client (node:net), PIPELINING of MAIL/RCPT/DATA

interface Reply {
  code: number;
  text: string;
}

class SmtpConn {
  private readonly sock: Socket;
  private buf = "";
  private partial: string[] = [];
  private readonly ready: Reply[] = [];
  private readonly waiters: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | null = null;
  pipelining = false;

  constructor(port: number) {
    this.sock = connect({ port, host: "127.0.0.1" });
    this.sock.setNoDelay(true);
    this.sock.on("data", (d: Buffer) => this.onData(d));
    const fail = (e: Error) => {
      this.failure ??= e;
      for (const w of this.waiters.splice(0)) w.reject(this.failure);
    };
    this.sock.on("error", fail);
    this.sock.on("close", () => fail(new Error("connection closed by the server")));
  }

  private onData(d: Buffer): void {
    this.buf += d.toString("latin1");
    for (;;) {
      const i = this.buf.indexOf("\r\n");
      if (i < 0) break;
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 2);
      if (line.length >= 4 && line[3] === "-") {
        this.partial.push(line);
        continue;
      }
      const r = { code: Number(line.slice(0, 3)), text: [...this.partial, line].join("\n") };
      this.partial = [];
      const w = this.waiters.shift();
      if (w) w.resolve(r);
      else this.ready.push(r);
    }
  }

  reply(): Promise<Reply> {
    const r = this.ready.shift();
    if (r) return Promise.resolve(r);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async expect(code: number, what: string): Promise<Reply> {
    const r = await this.reply();
    if (r.code !== code) throw new Error(`${what}: expected ${code}, got ${r.text}`);
    return r;
  }

  write(data: string | Buffer): void {
    this.sock.write(data);
  }

  static async open(port: number, auth?: { user: string; pass: string }): Promise<SmtpConn> {
    const c = new SmtpConn(port);
    await c.expect(220, "greeting");
    c.write("EHLO loadgen.bench.test\r\n");
    const ehlo = await c.expect(250, "EHLO");
    c.pipelining = /^250[- ]PIPELINING/im.test(ehlo.text);
    if (auth) {
      c.write(`AUTH PLAIN ${Buffer.from(`\0${auth.user}\0${auth.pass}`).toString("base64")}\r\n`);
      await c.expect(235, "AUTH PLAIN");
    }
    return c;
  }

  /** One transaction; returns when the 250 after the final dot arrived. `onDot` runs right after the dot is written. */
  async send(from: string, to: string, message: Buffer, onDot?: () => void): Promise<void> {
    if (this.pipelining) {
      this.write(`MAIL FROM:<${from}>\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
      const [m, r, d] = [await this.reply(), await this.reply(), await this.reply()];
      if (m.code !== 250 || r.code !== 250 || d.code !== 354) throw new Error(`MAIL/RCPT/DATA: ${m.text} / ${r.text} / ${d.text}`);
    } else {
      this.write(`MAIL FROM:<${from}>\r\n`);
      await this.expect(250, "MAIL FROM");
      this.write(`RCPT TO:<${to}>\r\n`);
      await this.expect(250, "RCPT TO");
      this.write("DATA\r\n");
      await this.expect(354, "DATA");
    }
    this.write(message);
    onDot?.();
    await this.expect(250, "end of data");
  }

  async quit(): Promise<void> {
    this.write("QUIT\r\n");
    await this.reply().catch(() => undefined);
    this.sock.end();
  }
}

interface LoadResult {
  /** ms from start to the last 250 after DATA */
  acceptMs: number;
  sent: number;
  errors: string[];
}

/** SESSIONS connections, each through EHLO (and AUTH when given), or why one failed. */
type Sessions = (SmtpConn | Error)[];

/**
 * Opens the sessions of a run before its clock starts: the load is "reused connections", so
 * setting them up is not part of relaying. On madmail that is 20 password checks (scrypt, tens
 * of ms of CPU each), which a short run would otherwise count as relay work; Postfix's side
 * has no AUTH at all.
 */
async function openSessions(port: number, auth?: { user: string; pass: string }): Promise<Sessions> {
  return Promise.all(Array.from({ length: SESSIONS }, () => SmtpConn.open(port, auth).catch((e: Error) => e)));
}

/** Each session sends `perSession` messages over its connection, then QUIT. */
async function runLoad(sessions: Sessions, to: string, body: Body, perSession: number, tag: string, t0: number): Promise<LoadResult> {
  let last = t0;
  let sent = 0;
  const errors: string[] = [];
  await Promise.all(
    sessions.map(async (conn, s) => {
      if (conn instanceof Error) return void errors.push(`session ${s}: ${conn.message}`);
      try {
        for (let i = 0; i < perSession; i++) {
          await conn.send(SENDER, to, messageBytes(body, `${tag}.${s}.${i}.`));
          sent++;
          last = now();
        }
        await conn.quit();
      } catch (e) {
        errors.push(`session ${s}: ${(e as Error).message}`);
        conn.write("QUIT\r\n");
      }
    }),
  );
  return { acceptMs: last - t0, sent, errors };
}

// ---------------------------------------------------------------------------------------------
// counting arrivals in a Maildir new/: inotify (fs.watch) for the time, readdir to check

class Arrivals {
  private readonly watcher: FSWatcher;
  count = 0;
  lastAt = 0;
  private waiters: { n: number; resolve: (t: number) => void }[] = [];
  /** Files already there: the directories are not emptied between runs. */
  readonly base: number;

  constructor(readonly dir: string) {
    this.base = countFiles(dir);
    this.watcher = watch(dir, (ev, name) => {
      if (ev !== "rename" || !name) return;
      this.count++;
      this.lastAt = now();
      if (this.waiters.length) {
        const t = this.lastAt;
        this.waiters = this.waiters.filter((w) => {
          if (this.count >= w.n) w.resolve(t);
          return this.count < w.n;
        });
      }
    });
  }

  /** Resolves with the time the n-th file arrived; falls back to readdir every 500 ms (missed events). */
  async waitFor(n: number, timeoutMs: number): Promise<number> {
    const end = Date.now() + timeoutMs;
    let done: number | null = null;
    const p = new Promise<number>((resolve) => {
      if (this.count >= n) resolve(this.lastAt);
      else this.waiters.push({ n, resolve });
    }).then((t) => (done = t));
    while (done === null) {
      await Promise.race([p, sleep(500)]);
      if (done !== null) break;
      if (countFiles(this.dir) - this.base >= n) return now();
      if (Date.now() > end) throw new Error(`${countFiles(this.dir) - this.base} of ${n} new files in ${this.dir} after ${timeoutMs} ms`);
    }
    return done;
  }

  close(): void {
    this.watcher.close();
  }
}

/** Waits for the next file in `dir` (fs.watch), resolving with its arrival time. */
function nextArrival(a: Arrivals): Promise<number> {
  return a.waitFor(a.count + 1, 30_000);
}

// ---------------------------------------------------------------------------------------------
// madmail instances

interface MmState extends MadmailState {
  mailRoot: string;
}

const mmCli = (m: MmState, args: string[], stdin?: string) => madmailCli(m, args, { stdin });

function mmState(name: string): MmState {
  const st = newMadmailState("mm-relay", name, tempDirs, root.dir);
  return { ...st, mailRoot: join(st.dir, "mail") };
}

interface MmServer {
  state: MmState;
  pid: number;
  httpPort: number;
  submissionPort: number | null;
  proc: ReturnType<typeof Bun.spawn>;
  log: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

async function mmServe(m: MmState, opts: { submission: boolean; profileDir?: string }): Promise<MmServer> {
  const httpPort = await freePort();
  const submissionPort = opts.submission ? await freePort() : null;
  const log = join(m.dir, `serve-${Date.now()}.log`);
  const proc = Bun.spawn(
    [
      ...madmailHead(opts.profileDir), "serve", "--http", `127.0.0.1:${httpPort}`, "--https", "off", "--smtp", "off", "--lmtp", "off",
      "--submission", submissionPort ? `127.0.0.1:${submissionPort}` : "off", "--submissions", "off",
    ],
    { cwd: m.dir, env: madmailEnv(m), stdin: "ignore", stdout: "ignore", stderr: Bun.file(log) },
  );
  const stop = track(`madmail ${m.name} pid ${proc.pid}`, proc);
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const what = `madmail ${m.name}`;
  try {
    await waitPort(httpPort, { timeoutMs: 20_000, alive, what });
    if (submissionPort) await waitPort(submissionPort, { timeoutMs: 20_000, alive, what });
    const end = Date.now() + 10_000;
    while (!(await fetch(`http://127.0.0.1:${httpPort}/healthz`).then((r) => r.ok, () => false))) {
      if (Date.now() > end) throw new Error(`madmail ${m.name}: /healthz does not answer`);
      await sleep(50);
    }
  } catch (e) {
    await stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n--- ${log} ---\n${existsSync(log) ? readFileSync(log, "utf8").slice(-3000) : ""}`);
  }
  return { state: m, pid: proc.pid, httpPort, submissionPort, proc, log, stop };
}

function queueStates(db: string): Record<string, number> {
  const d = new Database(db, { readonly: true });
  try {
    const rows = d.query("SELECT state, count(*) AS n FROM deliveries GROUP BY state").all() as { state: string; n: number }[];
    return Object.fromEntries(rows.map((r) => [r.state, r.n]));
  } finally {
    d.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Postfix: the relay (b.test -> smtp-sink, c.test -> the second Postfix) and the final stop

interface Sink {
  pid: number;
  port: number;
  /** smtp-sink's running message counter (-c) */
  count(): number;
  waitFor(n: number, timeoutMs: number): Promise<number>;
  stop(): Promise<void>;
}

async function startSink(): Promise<Sink> {
  const port = await freePort();
  const proc = Bun.spawn([SMTP_SINK!, "-u", "nobody", "-c", `127.0.0.1:${port}`, "256"], { env: ENV, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const stop = track(`smtp-sink pid ${proc.pid}`, proc, 3000);
  let count = 0;
  let waiters: { n: number; resolve: (t: number) => void }[] = [];
  (async () => {
    const dec = new TextDecoder();
    let tail = "";
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      tail = (tail + dec.decode(chunk)).slice(-200);
      const all = [...tail.matchAll(/mesg=(\d+)/g)];
      const m = all[all.length - 1];
      if (m) {
        count = Number(m[1]);
        const t = now();
        waiters = waiters.filter((w) => {
          if (count >= w.n) w.resolve(t);
          return count < w.n;
        });
      }
    }
  })().catch(() => undefined);
  await waitPort(port, { timeoutMs: 20_000, alive: () => proc.exitCode === null, what: "smtp-sink" });
  return {
    pid: proc.pid,
    port,
    count: () => count,
    waitFor(n, timeoutMs) {
      if (count >= n) return Promise.resolve(now());
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`smtp-sink counted ${count} of ${n} messages after ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ n, resolve: (x) => (clearTimeout(t), resolve(x)) });
      });
    },
    stop,
  };
}

async function startPostfixPair(sink: Sink): Promise<{ relay: PostfixInstance; final: PostfixInstance; finalNew: string }> {
  // The final stop: c.test delivered by virtual(8) into Maildirs owned by nobody.
  const finalDir = peerDir("relayfin", root.dir);
  const vmail = virtualMaildir(finalDir, RCPT_PF2);
  const finalPort = await freePort();
  const final = await startPostfix({ dir: finalDir, smtpPort: finalPort, relayDomains: {}, hostname: "mx.c.test", extra: vmail.extra, masterAppend: vmail.masterAppend });
  stoppers.set(`postfix ${finalDir}`, () => final.stop());
  const relayDir = peerDir("relaypf", root.dir);
  const relay = await startPostfix({
    dir: relayDir,
    smtpPort: await freePort(),
    relayDomains: { "b.test": `smtp:[127.0.0.1]:${sink.port}`, "c.test": `smtp:[127.0.0.1]:${finalPort}` },
    hostname: "mx.a.test",
  });
  stoppers.set(`postfix ${relayDir}`, () => relay.stop());
  return { relay, final, finalNew: vmail.maildirNew };
}

function queueEmpty(pf: PostfixInstance): boolean {
  return /Mail queue is empty/.test(pf.queue());
}

// ---------------------------------------------------------------------------------------------
// measurements

type System = "madmail" | "madmail_nodkim" | "madmail_defaults" | "postfix_sink" | "postfix_sink_smtp_source" | "postfix_maildir";

interface ThroughputRun {
  system: System;
  size: Size;
  round: number;
  n: number;
  acceptS: number;
  deliverS: number;
  /** CPU seconds in the run (start to last delivery) */
  cpu: Record<string, number>;
  /** busy CPU of the whole machine during the run, all cores, seconds */
  busy: number;
  load: string;
  before: number;
  note?: string;
  profiled?: boolean;
}

const runs: ThroughputRun[] = [];
const problems: string[] = [];
const partLoad: Record<string, string> = {};
const settingsNotes: string[] = [];

function runLine(r: ThroughputRun): string {
  const cpu = Object.entries(r.cpu).map(([k, v]) => `${k}=${fmtDec(v)}s`).join(" ");
  const others = r.busy - Object.values(r.cpu).reduce((x, y) => x + (Number.isFinite(y) ? y : 0), 0);
  return `r${r.round} ${r.system.padEnd(24)} ${String(r.size).padStart(4)} B n=${r.n} accepted=${fmtInt(r.n / r.acceptS).padStart(6)}/s (${fmtDec(r.acceptS)}s) delivered=${fmtInt(r.n / r.deliverS).padStart(6)}/s (${fmtDec(r.deliverS)}s) cpu: ${cpu} machine_busy=${fmtDec(r.busy)}s (not ours: ${fmtDec(others)}s) busy_before=${fmtDec(r.before)}cores loadavg_before="${r.load}"${r.note ? ` ${r.note}` : ""}`;
}

const LAT_MM = "madmail A → /mxdeliv → madmail B Maildir";
const LAT_PF = "Postfix → Postfix (virtual(8) Maildir)";
const LAT_MM_NODKIM = "madmail, A without a DKIM key (informational)";

interface Latency {
  label: string;
  accept: number[];
  deliver: number[];
  load: string;
  /** ms per fsync of a 4 KB file in the bench's temp dir: right before the run, and sampled every 100 ms during it. */
  diskBefore: number[];
  diskDuring: number[];
}
const latencies: Latency[] = [];
/** A disk is quiet for the latency runs when a small fsync takes less than this. */
const DISK_QUIET_MS = 10;

function diskText(l: Latency): string {
  const during = l.diskDuring.length ? `during (${l.diskDuring.length} samples): p50 ${fmtDec(percentile(l.diskDuring, 50))}, p99 ${fmtDec(percentile(l.diskDuring, 99))}, max ${fmtDec(Math.max(...l.diskDuring))}` : "during: no sample";
  return `before: max ${fmtDec(Math.max(...l.diskBefore))}; ${during}`;
}

interface Timing {
  label: string;
  mean: number;
  median: number;
  min: number;
  max: number;
  runs: number;
  tool: string;
}
const timings: Timing[] = [];
const backlogNotes: string[] = [];
const memRows: { label: string; rssMb: number; hwmMb: number; note?: string }[] = [];
let profileText = "";
const startedAt = new Date();
let exitCode = 0;

// ---------------------------------------------------------------------------------------------
// main

// Every system's state in a directory of its own below one root (see benchRoot: block groups).
const root = benchRoot("mmrb", tempDirs);
const work = mkdtempSync(join(root.dir, "work-"));
chmodSync(work, 0o755);

try {
  console.log("# building the 1 KB and 4 KB PGP/MIME bodies");
  const bodies = new Map<Size, Body>();
  for (const s of SIZES) bodies.set(s, await makeBody(s, work));
  console.log(`# bodies: ${[...bodies.values()].map((b) => `${b.size} bytes`).join(", ")}`);

  // --- madmail B (receiver) and A (sender)
  const B = mmState("b");
  mmCli(B, ["init", "--domain", "b.test", "--quiet"]);
  mmCli(B, ["user", "add", RCPT, "--quota", "100G"]);
  mmCli(B, ["config", "set", "mail_root", B.mailRoot]);
  const A = mmState("a");
  mmCli(A, ["init", "--domain", "a.test", "--quiet"]);
  mmCli(A, ["user", "add", SENDER, "--password-stdin"], `${SENDER_PASS}\n`);
  mmCli(A, ["dkim", "generate", "a.test"]);
  mmCli(A, ["config", "set", "queue.concurrency", String(CONCURRENCY)]);
  mmCli(A, ["config", "set", "queue.per_destination", String(PER_DEST)]);
  // A2: the same as A without a DKIM key (informational: what signing costs; Postfix does not sign)
  const A2 = mmState("a2");
  mmCli(A2, ["init", "--domain", "a.test", "--quiet"]);
  mmCli(A2, ["user", "add", SENDER, "--password-stdin"], `${SENDER_PASS}\n`);
  mmCli(A2, ["config", "set", "queue.concurrency", String(CONCURRENCY)]);
  mmCli(A2, ["config", "set", "queue.per_destination", String(PER_DEST)]);
  // A3: the same as A with the queue settings left at their defaults (informational)
  const A3 = mmState("a3");
  mmCli(A3, ["init", "--domain", "a.test", "--quiet"]);
  mmCli(A3, ["user", "add", SENDER, "--password-stdin"], `${SENDER_PASS}\n`);
  mmCli(A3, ["dkim", "generate", "a.test"]);
  settingsNotes.push(
    `A: queue.concurrency ${CONCURRENCY}, queue.per_destination ${PER_DEST} (defaults ${QUEUE_DEFAULTS}), DKIM key for a.test (rsa-sha256 2048, every message signed), ` +
      "route `endpoint-cache set b.test http://127.0.0.1:PORT/mxdeliv` (plain HTTP, keep-alive agent of at most 100 sockets per host); B: bob@b.test, durable Maildir (fsync before the 200); " +
      `both log one line per message to a file (default log level). A2 = A without a DKIM key; A3 = A with queue.concurrency / queue.per_destination at their defaults (${QUEUE_DEFAULTS}); all three relay to the same B`,
  );

  let b = await mmServe(B, { submission: false });
  mmCli(A, ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${b.httpPort}/mxdeliv`]);
  let a = await mmServe(A, { submission: true });
  mmCli(A2, ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${b.httpPort}/mxdeliv`]);
  const a2 = await mmServe(A2, { submission: true });
  mmCli(A3, ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${b.httpPort}/mxdeliv`]);
  const a3 = await mmServe(A3, { submission: true });
  const bNew = join(B.mailRoot, RCPT, "new");
  const auth = { user: SENDER, pass: SENDER_PASS };

  // --- Postfix relay + final Postfix + smtp-sink
  const sink = await startSink();
  const { relay, final, finalNew } = await startPostfixPair(sink);
  const relaySpool = join(relay.dir, "spool");
  const finalSpool = join(final.dir, "spool");
  settingsNotes.push(
    `Postfix ${sh(["postconf", "-d", "-h", "mail_version"])}: relay instance (test/helpers/peers.ts template: defaults for concurrency, smtp connection cache on demand, fsync'd queue) with transport b.test -> smtp:[127.0.0.1]:<smtp-sink -c>, c.test -> smtp:[127.0.0.1]:<final Postfix>; the final Postfix stores c.test with virtual(8) in Maildirs. No AUTH, no DKIM on the Postfix side (127.0.0.0/8 relays by mynetworks/relay_domains)`,
  );
  console.log(`# A pid ${a.pid} submission ${a.submissionPort}, B pid ${b.pid} http ${b.httpPort}; Postfix relay :${relay.smtpPort}, final :${final.smtpPort}, smtp-sink :${sink.port} pid ${sink.pid}`);

  // Delivery checks (first message through each path), then warm-up: JIT, Maildirs, Postfix daemons.
  {
    const body = bodies.get(1024)!;
    const c = await SmtpConn.open(a.submissionPort!, auth);
    await c.send(SENDER, RCPT, messageBytes(body, "check"));
    await c.quit();
    const end = Date.now() + 30_000;
    while (countFiles(bNew) < 1) {
      if (Date.now() > end) throw new Error(`the first message did not reach B's Maildir\nA queue: ${JSON.stringify(queueStates(A.db))}\n${readFileSync(a.log, "utf8").slice(-3000)}`);
      await sleep(50);
    }
    const pc = await SmtpConn.open(relay.smtpPort);
    await pc.send(SENDER, RCPT_PF2, messageBytes(body, "check"));
    await pc.quit();
    const end2 = Date.now() + 30_000;
    while (countFiles(finalNew) < 1) {
      if (Date.now() > end2) throw new Error(`the first message did not reach the final Postfix's Maildir\n${relay.logs().slice(-2000)}\n${final.logs().slice(-2000)}`);
      await sleep(50);
    }
    console.log("# warm-up (not measured)");
    const W = WARM - (WARM % SESSIONS);
    for (const s of SIZES) {
      const t0 = now();
      for (const x of [a, a2, a3]) {
        const r = await runLoad(await openSessions(x.submissionPort!, auth), RCPT, bodies.get(s)!, W / SESSIONS, `warm${s}`, t0);
        if (r.errors.length) throw new Error(`warm-up against madmail ${x.state.name} failed: ${r.errors.slice(0, 3).join("; ")}`);
      }
      const r2 = await runLoad(await openSessions(relay.smtpPort), RCPT, bodies.get(s)!, W / SESSIONS, `warm${s}`, now());
      if (r2.errors.length) throw new Error(`warm-up against Postfix failed: ${r2.errors.slice(0, 3).join("; ")}`);
    }
    const end3 = Date.now() + Math.max(120_000, 30 * W);
    while ((countFiles(bNew) < 1 + 6 * W || sink.count() < 2 * W || !queueEmpty(relay)) && Date.now() < end3) await sleep(200);
    if (countFiles(bNew) < 1 + 6 * W) throw new Error(`warm-up: ${countFiles(bNew)} files in B's Maildir, expected ${1 + 6 * W}`);
  }

  // ---------------------------------------------------------------------------------------------
  // 1 + 2: throughput

  async function madmailRun(round: number, size: Size, before: number, profiled = false, sender = a): Promise<ThroughputRun> {
    const a = sender;
    const A = sender.state;
    const load = loadText();
    const arr = new Arrivals(bNew);
    const setup0 = now();
    const setupCpu0 = procCpu(a.pid);
    const sessions = await openSessions(a.submissionPort!, auth);
    const setup = `setup(outside the clock)=${fmtInt(now() - setup0)}ms,A_cpu=${fmtDec(procCpu(a.pid) - setupCpu0)}s`;
    const cpuA0 = procCpu(a.pid);
    const cpuB0 = procCpu(b.pid);
    const thA0 = threadsByName(a.pid);
    const thB0 = threadsByName(b.pid);
    const self0 = selfCpu();
    const busy0 = machineBusy();
    const io0 = ioStall();
    const t0 = now();
    const r = await runLoad(sessions, RCPT, bodies.get(size)!, N / SESSIONS, `r${round}m${size}`, t0);
    // Deliveries while A was still accepting, and after: a tail much slower than the accept
    // phase's delivery rate would mean the worker waits on something other than CPU.
    const atAccept = { n: arr.count, s: (now() - t0) / 1000, busy: machineBusy() };
    if (r.errors.length) problems.push(`round ${round} madmail ${size}: ${r.errors.length} session errors: ${r.errors.slice(0, 3).join("; ")}`);
    let tDone: number;
    try {
      tDone = await arr.waitFor(r.sent, 600_000);
    } catch (e) {
      problems.push(`round ${round} madmail ${size}: ${(e as Error).message}`);
      tDone = now();
    }
    const busy1 = machineBusy();
    const io1 = ioStall();
    const cpu = { A: procCpu(a.pid) - cpuA0, B: procCpu(b.pid) - cpuB0, loadgen: selfCpu() - self0 };
    const thA1 = threadsByName(a.pid);
    const thB1 = threadsByName(b.pid);
    const jitOf = (before: Map<string, number>, after: Map<string, number>) => (after.get("JITWorker") ?? 0) - (before.get("JITWorker") ?? 0);
    const jit = jitOf(thA0, thA1) + jitOf(thB0, thB1);
    const threads = `threads_A(${threadsDelta(thA0, thA1)}) threads_B(${threadsDelta(thB0, thB1)})`;
    const tail = Math.max(0.001, (tDone - t0) / 1000 - atAccept.s);
    arr.close();
    await sleep(300);
    const files = countFiles(bNew) - arr.base;
    // B's file appears before B's answer reaches A, and A records the outcome after that: give
    // the last outcomes up to 5 s to be recorded (a disk stall can hold a commit back) before
    // counting a row that is not delivered as a problem.
    let q = queueStates(A.db);
    const pendingOf = (states: Record<string, number>) => Object.entries(states).filter(([k]) => k !== "delivered").reduce((s, [, v]) => s + v, 0);
    for (let waited = 0; pendingOf(q) && waited < 5000; waited += 100) {
      await sleep(100);
      q = queueStates(A.db);
    }
    const pending = pendingOf(q);
    if (files !== N || r.sent !== N) problems.push(`round ${round} madmail ${size}: sent ${r.sent}, ${files} files in B's Maildir, expected ${N}`);
    if (pending) problems.push(`round ${round} madmail ${size}: A's queue still holds ${JSON.stringify(q)}`);
    return {
      system: A.name === "a" ? "madmail" : A.name === "a2" ? "madmail_nodkim" : "madmail_defaults", size, round, n: r.sent, acceptS: r.acceptMs / 1000, deliverS: (tDone - t0) / 1000, cpu, busy: busy1 - busy0, load, before, profiled,
      note: `inotify_events=${arr.count} files=${files} ${setup} delivered/s_while_accepting=${fmtInt(atAccept.n / atAccept.s)} after=${fmtInt((r.sent - atAccept.n) / tail)} machine_cores_busy_while_accepting=${fmtDec((atAccept.busy - busy0) / atAccept.s)} after=${fmtDec((busy1 - atAccept.busy) / tail)} ${ioStallText(io0, io1)} jit_threads(A+B)=${fmtDec(jit)}s ${threads}`,
    };
  }

  async function postfixRun(round: number, size: Size, before: number, kind: "postfix_sink" | "postfix_sink_smtp_source" | "postfix_maildir"): Promise<ThroughputRun> {
    const load = loadText();
    const c0 = sink.count();
    const toMaildir = kind === "postfix_maildir";

    const arr = toMaildir ? new Arrivals(finalNew) : null;
    const sessions = kind === "postfix_sink_smtp_source" ? [] : await openSessions(relay.smtpPort);
    const cpuR0 = postfixCpu(relaySpool);
    const cpuF0 = postfixCpu(finalSpool);
    const cpuS0 = procCpu(sink.pid);
    const self0 = selfCpu();
    const busy0 = machineBusy();
    const io0 = ioStall();
    const t0 = now();
    let acceptMs: number;
    let sent = N;
    let loadgenCpu = NaN;
    if (kind === "postfix_sink_smtp_source") {
      const proc = Bun.spawn([SMTP_SOURCE!, "-s", String(SESSIONS), "-m", String(N), "-d", "-F", bodies.get(size)!.file, "-f", SENDER, "-t", RCPT, `127.0.0.1:${relay.smtpPort}`], {
        env: ENV, stdin: "ignore", stdout: "pipe", stderr: "pipe",
      });
      stoppers.set(`smtp-source ${proc.pid}`, () => stopProc(proc, "SIGKILL"));
      const { stdout: out, stderr: err, code } = await collectOutput(proc);
      stoppers.delete(`smtp-source ${proc.pid}`);
      acceptMs = now() - t0;
      loadgenCpu = childUsage(proc).total;
      if (code !== 0 || (out + err).trim()) problems.push(`round ${round} smtp-source ${size}: exit ${code}: ${(out + err).trim().slice(0, 1000)}`);
    } else {
      const r = await runLoad(sessions, toMaildir ? RCPT_PF2 : RCPT, bodies.get(size)!, N / SESSIONS, `r${round}p${size}`, t0);
      if (r.errors.length) problems.push(`round ${round} ${kind} ${size}: ${r.errors.length} session errors: ${r.errors.slice(0, 3).join("; ")}`);
      acceptMs = r.acceptMs;
      sent = r.sent;
    }
    let tDone: number;
    try {
      tDone = toMaildir ? await arr!.waitFor(sent, 600_000) : await sink.waitFor(c0 + sent, 600_000);
    } catch (e) {
      problems.push(`round ${round} ${kind} ${size}: ${(e as Error).message}\n${relay.queue().slice(0, 1000)}`);
      tDone = now();
    }
    const busy1 = machineBusy();
    const io1 = ioStall();
    const cpu: Record<string, number> = { postfix: postfixCpu(relaySpool) - cpuR0 };
    if (toMaildir) cpu.final_postfix = postfixCpu(finalSpool) - cpuF0;
    else cpu.smtp_sink = procCpu(sink.pid) - cpuS0;
    cpu.loadgen = kind === "postfix_sink_smtp_source" ? loadgenCpu : selfCpu() - self0;
    arr?.close();
    await sleep(300);
    const got = toMaildir ? countFiles(finalNew) - arr!.base : sink.count() - c0;
    if (got !== N || sent !== N) problems.push(`round ${round} ${kind} ${size}: sent ${sent}, ${got} arrived, expected ${N}`);
    if (!queueEmpty(relay)) problems.push(`round ${round} ${kind} ${size}: the relay's queue is not empty:\n${relay.queue().slice(0, 1000)}`);
    return { system: kind, size, round, n: sent, acceptS: acceptMs / 1000, deliverS: (tDone - t0) / 1000, cpu, busy: busy1 - busy0, load, before, note: ioStallText(io0, io1) };
  }

  /**
   * Right before each measured run, REWARM messages through the same path, delivered and out of
   * the queues before the run starts: a system measured after a minute of idling (while the
   * others ran) is not in its steady state. JSC throws away compiled code that has not run for
   * a while, and A's compiler threads took up to 1.5 s of CPU in such a run; Postfix's daemons
   * exit after max_idle (100 s) and are started again.
   */
  async function rewarm(system: ThroughputRun["system"], size: Size, sender = a): Promise<void> {
    if (!REWARM) return;
    const body = bodies.get(size)!;
    const per = Math.max(1, Math.floor(REWARM / SESSIONS));
    const end = Date.now() + 120_000;
    if (system.startsWith("madmail")) {
      const before = countFiles(bNew);
      const r = await runLoad(await openSessions(sender.submissionPort!, auth), RCPT, body, per, `rewarm${size}`, now());
      if (r.errors.length) throw new Error(`re-warm of ${system} failed: ${r.errors.slice(0, 3).join("; ")}`);
      const empty = () => Object.entries(queueStates(sender.state.db)).every(([k, v]) => k === "delivered" || v === 0);
      while ((countFiles(bNew) < before + r.sent || !empty()) && Date.now() < end) await sleep(100);
      return;
    }
    const toMaildir = system === "postfix_maildir";
    const count = () => (toMaildir ? countFiles(finalNew) : sink.count());
    const before = count();
    const r = await runLoad(await openSessions(relay.smtpPort), toMaildir ? RCPT_PF2 : RCPT, body, per, `rewarm${size}`, now());
    if (r.errors.length) throw new Error(`re-warm of ${system} failed: ${r.errors.slice(0, 3).join("; ")}`);
    while ((count() < before + r.sent || !queueEmpty(relay) || (toMaildir && !queueEmpty(final))) && Date.now() < end) await sleep(100);
  }

  if (PARTS.has("throughput")) {
    partLoad.throughput = loadText();
    console.log(`# throughput: ${ROUNDS} rounds, ${SESSIONS} sessions x ${N / SESSIONS} messages, sizes ${SIZES.join(", ")}`);
    const log = (r: ThroughputRun) => {
      runs.push(r);
      console.log(runLine(r));
    };
    // The pair the goal compares (madmail, Postfix -> smtp-sink) runs back to back for each size,
    // alternating which goes first, so that both meet the machine in the same state (its speed
    // drifts by 10-20% within a bench); the informational systems follow.
    const runSystem = async (system: System, round: number, s: Size) => {
      if (!SYSTEMS.has(system)) return;
      const sender = system === "madmail_nodkim" ? a2 : system === "madmail_defaults" ? a3 : a;
      await rewarm(system, s, sender);
      const before = await waitQuiet();
      const disk = await waitDiskQuiet({ dir: work, maxS: QUIET_WAIT, maxMs: DISK_QUIET_MS });
      // Where the run creates a file per message: B's Maildir, Postfix's queue (and the final Postfix's Maildir).
      const creates = (system.startsWith("madmail") ? [B.dir] : system === "postfix_maildir" ? [relay.dir, final.dir] : [relay.dir])
        .map((d) => fmtDec(createProbeUs(d), 0)).join("/");
      const r = system.startsWith("madmail")
        ? await madmailRun(round, s, before, false, sender)
        : await postfixRun(round, s, before, system as "postfix_sink" | "postfix_sink_smtp_source" | "postfix_maildir");
      log({ ...r, note: `${r.note ?? ""} disk_fsync_before=max ${fmtDec(Math.max(...disk))}ms file_create_before=${creates}us`.trim() });
    };
    for (let round = 1; round <= ROUNDS; round++) {
      for (const s of SIZES) {
        const pair: System[] = round % 2 ? ["madmail", "postfix_sink"] : ["postfix_sink", "madmail"];
        for (const system of [...pair, "madmail_nodkim", "madmail_defaults", "postfix_sink_smtp_source", "postfix_maildir"] as System[]) await runSystem(system, round, s);
      }
    }
    memRows.push({ label: "A (sender) after the throughput runs", ...memStatus(a.pid) });
    memRows.push({ label: "A without DKIM (sender) after the throughput runs", ...memStatus(a2.pid) });
    memRows.push({ label: "A with queue defaults (sender) after the throughput runs", ...memStatus(a3.pid) });
    memRows.push({ label: "B (receiver) after the throughput runs", ...memStatus(b.pid) });
    const q = queueStates(A.db);
    backlogNotes.push(`A's state file after the throughput runs: ${(statSync(A.db).size / 2 ** 20).toFixed(0)} MB (+ WAL), deliveries ${JSON.stringify(q)} (delivered rows are kept for queue.keep_delivered = 1d)`);
  }

  // ---------------------------------------------------------------------------------------------
  // 3: latency, one message at a time

  if (PARTS.has("latency")) {
    partLoad.latency = loadText();
    const body = bodies.get(1024)!;
    const measure = async (label: string, port: number, authFor: typeof auth | undefined, to: string, dir: string): Promise<void> => {
      await waitQuiet();
      const diskBefore = await waitDiskQuiet({ dir: work, maxS: QUIET_WAIT, maxMs: DISK_QUIET_MS });
      const load = loadText();
      const arr = new Arrivals(dir);
      const disk = fsyncSampler(work);
      const conn = await SmtpConn.open(port, authFor);
      const acc: number[] = [];
      const del: number[] = [];
      try {
        for (let i = -20; i < LAT_N; i++) {
          const arrived = nextArrival(arr);
          let tDot = 0;
          await conn.send(SENDER, to, messageBytes(body, `lat.${label.slice(0, 2)}.${i}.`), () => (tDot = now()));
          const tAcc = now();
          const tFile = await arrived;
          if (i >= 0) {
            acc.push(tAcc - tDot);
            del.push(tFile - tDot);
          }
        }
      } finally {
        await conn.quit();
        arr.close();
      }
      const diskDuring = await disk.stop();
      const got = countFiles(dir) - arr.base;
      if (got !== LAT_N + 20) problems.push(`latency ${label}: ${got} files, expected ${LAT_N + 20}`);
      const l = { label, accept: acc, deliver: del, load, diskBefore, diskDuring };
      latencies.push(l);
      console.log(`latency ${label}: dot->250 p50 ${fmtDec(percentile(acc, 50))} p99 ${fmtDec(percentile(acc, 99))} ms; dot->file p50 ${fmtDec(percentile(del, 50))} p99 ${fmtDec(percentile(del, 99))} max ${fmtDec(Math.max(...del))} ms (loadavg before ${load}; ${diskText(l)})`);
    };
    await measure(LAT_MM, a.submissionPort!, auth, RCPT, bNew);
    await measure(LAT_PF, relay.smtpPort, undefined, RCPT_PF2, finalNew);
    await measure(LAT_MM_NODKIM, a2.submissionPort!, auth, RCPT, bNew);
  }
  await a2.stop();
  await a3.stop();

  // ---------------------------------------------------------------------------------------------
  // 4: profile of A and B, from source, one 1 KB throughput run

  if (PARTS.has("profile")) {
    partLoad.profile = loadText();
    console.log("# profile: A and B from source under bun --cpu-prof");
    await a.stop();
    await b.stop();
    const profA = join(work, "prof-a");
    const profB = join(work, "prof-b");
    mkdirSync(profA);
    mkdirSync(profB);
    b = await mmServe(B, { submission: false, profileDir: profB });
    mmCli(A, ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${b.httpPort}/mxdeliv`]);
    a = await mmServe(A, { submission: true, profileDir: profA });
    // warm-up from source too (the JIT), then the measured run
    await runLoad(await openSessions(a.submissionPort!, auth), RCPT, bodies.get(1024)!, 50, "profwarm", now());
    await sleep(2000);
    const r = await madmailRun(0, 1024, await waitQuiet(), true);
    console.log(runLine(r));
    runs.push(r);
    await a.stop("SIGINT");
    await b.stop("SIGINT");
    const summary = (dir: string, who: string, perMsgCpu: number) => {
      const keep = values["keep-profiles"];
      const p = loadCpuProfile(dir, keep ? { dir: keep, prefix: who.slice(0, 1) } : undefined);
      if (!p) {
        problems.push(`profile of ${who}: no .cpuprofile written in ${dir}`);
        return "";
      }
      return summariseProfile(p, who, perMsgCpu);
    };
    profileText = [
      summary(profA, "A (submission -> queue -> POST /mxdeliv)", (r.cpu.A! / r.n) * 1000),
      summary(profB, "B (/mxdeliv -> Maildir)", (r.cpu.B! / r.n) * 1000),
    ].join("\n\n");
    // back to the compiled binaries for the rest
    b = await mmServe(B, { submission: false });
    mmCli(A, ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${b.httpPort}/mxdeliv`]);
    a = await mmServe(A, { submission: true });
  }

  await a.stop();
  await b.stop();
  await relay.stop();
  await final.stop();
  await sink.stop();

  // ---------------------------------------------------------------------------------------------
  // 5: a backlog of deferred deliveries

  if (PARTS.has("backlog")) {
    partLoad.backlog = loadText();
    await backlog(bodies.get(1024)!);
  }
} catch (e) {
  console.error(`relay.bench: ${(e as Error).stack ?? e}`);
  problems.push(`the run was aborted: ${(e as Error).message.split("\n")[0]}`);
  exitCode = 1;
} finally {
  await cleanup();
}

// ---------------------------------------------------------------------------------------------
// the backlog part

async function backlog(body: Body): Promise<void> {
  const Q = mmState("backlog");
  mmCli(Q, ["init", "--domain", "a.test", "--quiet"]);
  mmCli(Q, ["user", "add", SENDER, "--password-stdin"], `${SENDER_PASS}\n`);
  const closed = await freePort(); // nothing listens there: connection refused at once
  mmCli(Q, ["endpoint-cache", "set", "*.test", `http://127.0.0.1:${closed}/mxdeliv`]);
  const MIN = 60_000;
  const DAY = 1440 * MIN;
  const t = Date.now();
  const raw = Buffer.concat([body.pre, Buffer.from("backlog".padEnd(MSGID_LEN, "x")), body.post]).toString("latin1").replace(/^\.\./gm, ".");
  const rawBytes = Buffer.from(raw, "latin1");
  // 200 destination domains, the first few big (a peer outage hits a few peers hard)
  const domains = Array.from({ length: 200 }, (_x, i) => `peer${i}.test`);
  const pick = () => domains[Math.min(domains.length - 1, Math.floor(domains.length * Math.random() ** 3))]!;
  const t0 = now();
  {
    const db = new Database(Q.db);
    const msg = db.prepare("INSERT INTO messages (id, mail_from, body, size, door, auth_user, received_at) VALUES (?, ?, ?, ?, 'submission', ?, ?)");
    const dlv = db.prepare(`INSERT INTO deliveries (id, message_id, rcpt_domain, rcpts, state, route, tries, next_attempt_at, lease_until,
      last_error, created_at, updated_at, expires_at, rerouted_to) VALUES (?, ?, ?, ?, 'deferred', ?, ?, ?, NULL, ?, ?, ?, ?, NULL)`);
    const att = db.prepare("INSERT INTO delivery_attempts (delivery_id, at, transport, endpoint, outcome, detail, ms) VALUES (?, ?, 'http', ?, 'temporary', ?, 1)");
    db.transaction(() => {
      for (let i = 0; i < BACKLOG; i++) {
        const created = t - Math.floor(Math.random() * 2 * DAY);
        const mid = queueId(created);
        const did = queueId(created);
        const dom = pick();
        const tries = 1 + Math.floor(Math.random() * 8);
        const endpoint = `http://127.0.0.1:${closed}/mxdeliv`;
        const err = `http:${endpoint}: ECONNREFUSED: Unable to connect`;
        msg.run(mid, SENDER, rawBytes, rawBytes.length, SENDER, created);
        dlv.run(did, mid, dom, JSON.stringify([`user${i % 5000}@${dom}`]), `http:${endpoint}`, tries, t + MIN + Math.floor(Math.random() * 60 * MIN), err, created, t - MIN, created + 5 * DAY);
        att.run(did, t - MIN, endpoint, err);
      }
    })();
    db.close();
  }
  const fillS = (now() - t0) / 1000;
  backlogNotes.push(
    `backlog state file: ${fmtInt(BACKLOG)} deferred deliveries (1 per message, ${fmtInt(BACKLOG)} messages with the ${body.size}-byte body, 1 attempt row each), 200 destination domains (skewed), next attempts 1-60 min ahead; filled in ${fmtDec(fillS, 1)} s; ${(statSync(Q.db).size / 2 ** 20).toFixed(0)} MB`,
  );
  const env = madmailEnv(Q);
  const check = (args: string[]) => {
    const p = Bun.spawnSync([BIN, ...args], { cwd: Q.dir, env, stdout: "pipe", stderr: "pipe" });
    if (p.exitCode !== 0) throw new Error(`madmail ${args.join(" ")}: ${p.stderr.toString()}`);
    return p.stdout.toString() + p.stderr.toString();
  };
  const listOut = check(["queue", "list"]);
  backlogNotes.push(`\`queue list\` prints ${listOut.trim().split("\n").length} lines (header + first page; "${listOut.trim().split("\n").pop()}")`);
  const statsOut = check(["queue", "stats"]);
  backlogNotes.push(`\`queue stats\` prints ${statsOut.trim().split("\n").length} lines`);

  const timeIt = async (label: string, args: string[], runsN = 10): Promise<void> => {
    if (HYPERFINE) {
      const r = hyperfine(HYPERFINE, [BIN, ...args], { runs: runsN, json: join(Q.dir, "hf.json"), flags: ["--style", "none"], env: { ...env }, cwd: Q.dir, what: `hyperfine ${label}` });
      timings.push({ label, mean: r.mean, median: r.median, min: r.min, max: r.max, runs: r.times.length, tool: "hyperfine -N --warmup 2" });
    } else {
      const xs = timeRuns(runsN, () => check(args)).map((ms) => ms / 1000);
      timings.push({ label, mean: xs.reduce((x, y) => x + y, 0) / xs.length, median: median(xs), min: Math.min(...xs), max: Math.max(...xs), runs: xs.length, tool: "timed runs" });
    }
    const tm = timings[timings.length - 1]!;
    console.log(`${label}: median ${fmtDec(tm.median, 3)} s (min ${fmtDec(tm.min, 3)}, max ${fmtDec(tm.max, 3)}, ${tm.runs} runs)`);
  };
  await waitQuiet();
  await timeIt("madmail --version (start-up cost alone)", ["--version"]);
  await timeIt("madmail queue list (first page, 100 oldest)", ["queue", "list"]);
  await timeIt("madmail queue list --json (first page)", ["queue", "list", "--json"]);
  await timeIt("madmail queue stats", ["queue", "stats"]);

  // serve on the backlog
  const srv = await mmServe(Q, { submission: false });
  const cpu0 = procCpu(srv.pid);
  await sleep(10_000);
  memRows.push({ label: `serve on the ${fmtInt(BACKLOG)}-row backlog, after 10 s idle`, ...memStatus(srv.pid), note: `CPU in those 10 s: ${fmtDec(procCpu(srv.pid) - cpu0)} s` });
  const triesBefore = sumTries(Q.db);
  const tf = now();
  check(["queue", "flush"]);
  const flushS = (now() - tf) / 1000;
  const cpu1 = procCpu(srv.pid);
  let peak = 0;
  const during: Timing[] = [];
  for (let i = 0; i < 20; i++) {
    await sleep(1000);
    peak = Math.max(peak, memStatus(srv.pid).rssMb);
    if (i === 9) {
      // the admin commands while the worker churns (writer busy)
      for (const [label, args] of [["queue list during the retry churn", ["queue", "list"]], ["queue stats during the retry churn", ["queue", "stats"]]] as const) {
        const xs = timeRuns(3, () => check([...args])).map((ms) => ms / 1000);
        during.push({ label, mean: xs.reduce((x, y) => x + y, 0) / 3, median: median(xs), min: Math.min(...xs), max: Math.max(...xs), runs: 3, tool: "timed runs" });
      }
    }
  }
  const st = memStatus(srv.pid);
  const cpuChurn = procCpu(srv.pid) - cpu1;
  const triesAfter = sumTries(Q.db);
  const states = queueStates(Q.db);
  memRows.push({
    label: `serve 20 s after \`queue flush\` (peer refused, worker retrying)`,
    ...st,
    note: `peak VmRSS sampled each second ${fmtDec(peak, 1)} MB; ${fmtInt(triesAfter - triesBefore)} delivery attempts in 20 s (${fmtInt((triesAfter - triesBefore) / 20)}/s), CPU ${fmtDec(cpuChurn)} s; queue afterwards ${JSON.stringify(states)}; \`queue flush\` itself took ${fmtDec(flushS, 2)} s`,
  });
  timings.push(...during);
  await srv.stop();
}

function sumTries(db: string): number {
  const d = new Database(db, { readonly: true });
  try {
    return (d.query("SELECT sum(tries) AS n FROM deliveries").get() as { n: number }).n;
  } finally {
    d.close();
  }
}

// ---------------------------------------------------------------------------------------------
// .cpuprofile summary

function summariseProfile(p: CpuProfile, who: string, perKMsgCpu: number): string {
  const { samples, table } = profileTable(p);
  return `**${who}**: ${fmtInt(samples)} samples of the JS thread over the process's life (start-up, warm-up and the run); whole-process CPU in the profiled run: ${fmtDec(perKMsgCpu, 3)} s per 1000 messages.\n\n${table}`;
}

// ---------------------------------------------------------------------------------------------
// report

const LABELS: Record<System, string> = {
  madmail: "madmail A → POST /mxdeliv → madmail B (Maildir, fsync)",
  madmail_nodkim: "same, A without a DKIM key (informational)",
  madmail_defaults: `same, A with queue.concurrency / queue.per_destination at their defaults ${QUEUE_DEFAULTS} (informational)`,
  postfix_sink: "Postfix → smtp-sink (same load generator) — reference",
  postfix_sink_smtp_source: "Postfix → smtp-sink, load from `smtp-source -s 20 -d -F` (informational)",
  postfix_maildir: "Postfix → Postfix (virtual(8) Maildir) (informational)",
};

function report(): string {
  const out: string[] = [];
  const machine = machineLine(tempDirFilesystem());
  out.push(`Date: ${startedAt.toISOString()}  `);
  out.push(`Command: \`${COMMAND}\` (from the repository root; dist/madmail built from the working tree)  `);
  out.push(`Machine: ${machine}  `);
  out.push(`Versions: madmail ${sh([BIN, "--version"]) || "?"}; bun ${Bun.version}; Postfix ${sh(["postconf", "-d", "-h", "mail_version"]) || "?"}  `);
  out.push(`Load average (1/5/15 min) before each part: ${Object.entries(partLoad).map(([k, v]) => `${k} ${v}`).join("; ")}  `);
  out.push(
    `Load: ${SESSIONS} SMTP sessions in parallel, ${N / SESSIONS} messages each over the same connection (N = ${fmtInt(N)} per run), MAIL/RCPT/DATA pipelined, one recipient; ` +
      `bodies: real PGP/MIME (openpgp: SKESK + SEIPD, password-encrypted), ${[...SIZES].map((s) => `${s} bytes`).join(" and ")} with a unique Message-ID each. ` +
      `madmail: AUTH PLAIN once per session on A's submission port, MAIL FROM = the authenticated user. ` +
      `The sessions are connected (and authenticated) before the clock and the CPU counters start: they are reused connections, and Postfix's side has no AUTH; ` +
      `the setup (20 password checks, scrypt N=2^15, on madmail) is shown in each run line. ` +
      `Before the first run, ${fmtInt(WARM - (WARM % SESSIONS))} messages of each size through every server (warm-up: JSC's compiler threads, Maildirs, Postfix's daemons); ` +
      `Right before each measured run, ${fmtInt(REWARM)} messages through the same system, delivered before the run starts (both systems: after idling while the others ran, JSC has thrown compiled code away and Postfix's daemons have exited). ` +
      `jit_threads in a run line is the CPU that A's and B's JITWorker threads took in that run. ${ROUNDS} rounds; in each, for each size, madmail and Postfix → smtp-sink back to back (alternating which goes first), then the informational systems; medians; ` +
      `before each run the script waits up to ${QUIET_WAIT} s for the machine to be nearly idle (< ${QUIET_CORES} cores busy over 1 s; the machine is shared), then up to ${QUIET_WAIT} s for the disk to be quiet (five fsyncs of a 4 KB file in the temp dir under ${DISK_QUIET_MS} ms each; disk_fsync_before in the run lines). ` +
      `Layout: every system's state (A, A2, A3, B, the two Postfix instances, the bench's own files) in a directory of its own below one root ${root.spread ? "marked `chattr +T`, so that each gets block groups of its own" : "(`chattr +T` failed here: the directories may share block groups)"}: ` +
      `on ext4 without a journal a file create scans past every inode of its block group freed in the last minute or more, so Postfix's deleted queue files would slow B's Maildir creates (test/bench/_lib.ts, benchRoot); ` +
      `file_create_before in the run lines is µs per file create, measured right before the run where that system creates its files (madmail: B's directory; Postfix: its queue's, and the final Postfix's).  `,
  );
  for (const s of settingsNotes) out.push(`Settings: ${s}  `);
  out.push("");

  const main = runs.filter((r) => !r.profiled);
  const sel = (sys: System, size: Size) => main.filter((r) => r.system === sys && r.size === size);
  const medOf = (xs: ThroughputRun[], f: (r: ThroughputRun) => number) => median(xs.map(f));
  const acc = (r: ThroughputRun) => r.n / r.acceptS;
  const del = (r: ThroughputRun) => r.n / r.deliverS;
  /** msg/s if every core did nothing but this run's processes (servers + load generator): robust against other load */
  const ceiling = (r: ThroughputRun) => (NPROC * r.n) / Object.values(r.cpu).reduce((x, y) => x + (Number.isFinite(y) ? y : 0), 0);
  if (main.length) {
    out.push("### Throughput, end to end");
    out.push("");
    out.push(
      "accepted/s: N ÷ time until the last 250 after DATA; delivered/s: N ÷ time until the last message was at the far end (B's Maildir new/, smtp-sink's counter, the final Postfix's Maildir). " +
        "CPU-bound ceiling: nproc × N ÷ (CPU seconds of the servers and the load generator in the run), i.e. the rate if the machine did nothing else — less sensitive to the other developers' load than the wall-clock rates (it ignores that madmail A is one JavaScript thread: see the profile).",
    );
    out.push("");
    out.push(`| path | body | accepted/s (median) | delivered/s end to end (median) | delivered/s per round | server CPU-s per 1000 msgs | load generator CPU-s per 1000 msgs | CPU-bound ceiling on ${NPROC} cores, msg/s |`);
    out.push("| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |");
    for (const sys of Object.keys(LABELS) as System[]) {
      for (const size of SIZES) {
        const xs = sel(sys, size);
        if (!xs.length) continue;
        const servers = Object.keys(xs[0]!.cpu).filter((k) => k !== "loadgen");
        const cpuTxt = servers.map((k) => `${k} ${fmtDec(medOf(xs, (r) => (r.cpu[k]! / r.n) * 1000), 3)}`).join(", ");
        out.push(`| ${LABELS[sys]} | ${size} B | ${fmtInt(medOf(xs, acc))} | ${fmtInt(medOf(xs, del))} | ${xs.map((r) => fmtInt(del(r))).join(", ")} | ${cpuTxt} | ${fmtDec(medOf(xs, (r) => (r.cpu.loadgen! / r.n) * 1000), 3)} | ${fmtInt(medOf(xs, ceiling))} |`);
      }
    }
    out.push("");
  }
  const lat = (label: string) => latencies.find((l) => l.label === label);
  if (latencies.length) {
    out.push(`### Latency, one message at a time (${LAT_N} messages of ${SIZES[0]} bytes after 20 unmeasured; ms from writing the end-of-data dot)`);
    out.push("");
    out.push("| path | → 250 p50 | → 250 p99 | 250 → file p50 | → file in Maildir new/ p50 | p90 | p99 | max | loadavg before | disk: fsync of a 4 KB file, ms |");
    out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    for (const l of latencies) {
      const after = l.deliver.map((d, i) => d - l.accept[i]!);
      out.push(`| ${l.label} | ${fmtDec(percentile(l.accept, 50))} | ${fmtDec(percentile(l.accept, 99))} | ${fmtDec(percentile(after, 50))} | **${fmtDec(percentile(l.deliver, 50))}** | ${fmtDec(percentile(l.deliver, 90))} | **${fmtDec(percentile(l.deliver, 99))}** | ${fmtDec(Math.max(...l.deliver))} | ${l.load} | ${diskText(l)} |`);
    }
    out.push("");
    out.push(`Before each latency run the script waits (at most ${QUIET_WAIT} s) until five fsyncs of a 4 KB file in the bench's temp dir each take under ${DISK_QUIET_MS} ms, and samples that fsync every 100 ms during the run (last column): every message costs each system fsyncs on this shared disk, so a slow disk shows up in the servers' p99 and in the sample alike.`);
    out.push("");
  }
  if (timings.length || memRows.length) {
    out.push("### Backlog and memory");
    out.push("");
    if (timings.length) {
      out.push("| command | median s | mean s | min s | max s | runs | tool |");
      out.push("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
      for (const t of timings) out.push(`| ${t.label} | ${fmtDec(t.median, 3)} | ${fmtDec(t.mean, 3)} | ${fmtDec(t.min, 3)} | ${fmtDec(t.max, 3)} | ${t.runs} | ${t.tool} |`);
      out.push("");
    }
    if (memRows.length) {
      out.push("| process | VmRSS MB | VmHWM (peak) MB | notes |");
      out.push("| --- | ---: | ---: | --- |");
      for (const m of memRows) out.push(`| ${m.label} | ${fmtDec(m.rssMb, 1)} | ${fmtDec(m.hwmMb, 1)} | ${m.note ?? ""} |`);
      out.push("");
    }
    for (const n of backlogNotes) out.push(`- ${n}`);
    out.push("");
  }

  // goals
  out.push("### Goals (issue)");
  out.push("");
  out.push("| goal | measured | |");
  out.push("| --- | --- | --- |");
  for (const size of SIZES) {
    const m = sel("madmail", size);
    const p = sel("postfix_sink", size);
    if (m.length && p.length) {
      const ratio = medOf(m, del) / medOf(p, del);
      out.push(`| end to end ≥ ${GOAL_RATIO}x Postfix → smtp-sink, ${size} B, ${SESSIONS} sessions | ${fmtInt(medOf(m, del))} / ${fmtInt(medOf(p, del))} msg/s = ${fmtDec(ratio)}x (accepted/s: ${fmtDec(medOf(m, acc) / medOf(p, acc))}x; CPU-bound ceilings: ${fmtDec(medOf(m, ceiling) / medOf(p, ceiling))}x) | ${verdict(ratio >= GOAL_RATIO)} |`);
      // Each round's pair ran back to back: their ratio, round by round.
      const paired = m.flatMap((r) => p.filter((q) => q.round === r.round).map((q) => del(r) / del(q)));
      if (paired.length) out.push(`| (the same, ratio of each round's back-to-back pair) | ${paired.map((x) => `${fmtDec(x)}x`).join(", ")}; median ${fmtDec(median(paired))}x | |`);
      const nd = sel("madmail_nodkim", size);
      if (nd.length) out.push(`| (informational) the same with A not signing (Postfix does not sign either) | ${fmtInt(medOf(nd, del))} / ${fmtInt(medOf(p, del))} msg/s = ${fmtDec(medOf(nd, del) / medOf(p, del))}x (CPU-bound ceilings: ${fmtDec(medOf(nd, ceiling) / medOf(p, ceiling))}x) | |`);
    }
  }
  const ml = lat(LAT_MM);
  if (ml) {
    out.push(`| latency A accepts → file in B's Maildir: p50 < ${GOAL_P50} ms | ${fmtDec(percentile(ml.deliver, 50))} ms | ${verdict(percentile(ml.deliver, 50) < GOAL_P50)} |`);
    out.push(`| same, p99 < ${GOAL_P99} ms | ${fmtDec(percentile(ml.deliver, 99))} ms | ${verdict(percentile(ml.deliver, 99) < GOAL_P99)} |`);
  }
  const pl = lat(LAT_PF);
  if (pl) out.push(`| Postfix → Postfix relay latency (reported) | p50 ${fmtDec(percentile(pl.deliver, 50))} ms, p99 ${fmtDec(percentile(pl.deliver, 99))} ms | |`);
  const tList = timings.find((t) => t.label.startsWith("madmail queue list (first"));
  const tStats = timings.find((t) => t.label === "madmail queue stats");
  if (tList) out.push(`| \`queue list\` on ${fmtInt(BACKLOG)} deferred rows < ${GOAL_LIST_S} s to first page | median ${fmtDec(tList.median, 3)} s (whole command, start-up included) | ${verdict(tList.median < GOAL_LIST_S)} |`);
  if (tStats) out.push(`| \`queue stats\` < ${GOAL_STATS_S} s | median ${fmtDec(tStats.median, 3)} s | ${verdict(tStats.median < GOAL_STATS_S)} |`);
  const memIdle = memRows.find((m) => m.label.includes("idle"));
  const memChurn = memRows.find((m) => m.label.includes("flush"));
  if (memIdle && memChurn) {
    const worst = Math.max(memIdle.hwmMb, memChurn.hwmMb);
    out.push(`| serve with that backlog < ${GOAL_RSS_MB} MB | VmRSS idle ${fmtDec(memIdle.rssMb, 1)} MB, while retrying ${fmtDec(memChurn.rssMb, 1)} MB, peak (VmHWM) ${fmtDec(worst, 1)} MB | ${verdict(worst < GOAL_RSS_MB)} |`);
  }
  out.push("");
  out.push(`Validity: ${problems.length ? `**${problems.length} problem(s)**, see below` : "every message of every run arrived exactly once at the far end (Maildir file count / smtp-sink counter), A's queue and Postfix's queue empty after each run, no SMTP errors"}.`);
  out.push("");
  if (profileText) {
    out.push("### Where the time goes (bun --cpu-prof, one 1 KB run from source; not in the medians)");
    out.push("");
    const pr = runs.find((r) => r.profiled);
    if (pr) out.push(`Profiled run (slower: sampling profiler on both): ${runLine(pr).replace(/^r0 /, "")}`);
    out.push("");
    out.push(profileText);
    out.push("");
  }
  out.push("Per run (CPU seconds from the start of the run to the last delivery; machine_busy = busy CPU of the whole machine in that time, all cores; loadavg and busy cores just before; delivered/s and busy cores while A was accepting and after; io_stall = seconds in which some / all running tasks of the machine waited for the disk, /proc/pressure/io):");
  out.push("");
  out.push("```");
  for (const r of runs) out.push(runLine(r));
  out.push("```");
  out.push(...problemsBlock(problems));
  return out.join("\n");
}

const INTRO = `## Outbound relay: submission → queue → /mxdeliv vs. Postfix (relay.bench.ts)

What it measures: madmail A accepts over submission (AUTH) for remote recipients and delivers to madmail
B over \`POST /mxdeliv\` (two \`dist/madmail serve\` processes); a throw-away Postfix relays the same load
to an smtp-sink (and, informational, to a second Postfix storing in a Maildir). Same load generator for both
(a raw SMTP client in the bench process). Then one-at-a-time latency, a 100,000-row deferred backlog
(\`queue list\`, \`queue stats\`, memory of \`serve\`), and a CPU profile of A and B.`;

const haveData = runs.length || latencies.length || timings.length || memRows.length;
finish({ report: haveData ? report() : "", heading: INTRO, bench: "relay.bench.ts", noResults: values["no-results"], problems, exitCode });
