// Exchanger benchmark (not a test: bun test ignores *.bench.ts).
//
//   ./node_modules/.bin/bun test/bench/exchanger.bench.ts [--latency 500] [--poller 200]
//       [--backlog 10000] [--reps 3] [--idle 3] [--idle-gap 15] [--quiet-wait 45] [--only longpoll,poller,drain,profile,syscalls]
//       [--keep-profiles DIR] [--no-results]
//
// Needs dist/madmail (./node_modules/.bin/bun build.ts). Everything listens on 127.0.0.1 and lives
// in temp dirs removed at the end; every process started here is stopped by its PID.
//
// 1. Long-poll latency. Server A (`madmail serve`, a.test, `relay.domains b.test`, exchanger `x`
//    --mode pull --domains b.test with a token). A puller in this process long-polls
//    `GET /exchanger/pull?wait=30&max=50` (Bearer token) and acks each batch. A sender POSTs one
//    message at a time to A's /mxdeliv for bob@b.test (4.8 KB Delta Chat sample, sender
//    alice@remote.test, a unique X-Seq header); the next one only after the previous arrived and
//    was acked. Latency = from just before the POST to the moment the pull answer holding that
//    X-Seq (parsed from body_base64) has been read. Also A's 200 to the POST, for comparison.
//    LATENCY messages after 20 unmeasured ones. Then IDLE messages, each after IDLE_GAP seconds
//    without mail (a puller that waits long, as with real, sporadic mail); one not there within
//    35 s is looked up in A's state file (held? leased to a pull that nobody receives?).
// 1b. The same through B's built-in poller: B (`madmail serve`, b.test, bob@b.test, `exchanger add x
//    URL_A` + `exchanger set x --remote-token-file F`, default poll interval) pulls from a fresh A;
//    latency = from just before the POST at A until the file appears in B's Maildir new/ (inotify).
//    POLLER messages after 10 unmeasured ones, then IDLE messages after IDLE_GAP s each (wait 95 s).
// 2. Drain. Per repetition a fresh A and a fresh pulling state (b.test, bob@b.test, quota 1G).
//    BACKLOG messages (the sample plus X-Seq) are put on hold at A by inserting rows directly (as
//    the worker would, cf. holdMessages() in test/exchanger/scenarios.test.ts). First a warm-up
//    drain of its own BACKLOG rows by a bare fetch loop here (pull max=50 + ack, nothing stored:
//    A's side alone, and A's JIT is warm for the measured run, as on a long-running server); then
//    the measured run: `madmail pull-client --url A --token-file F --json` against the second
//    state file, timed from spawn to exit. The Maildir must then hold exactly BACKLOG files with
//    every X-Seq once, and A nothing held. CPU: A's serve from /proc/PID/stat (utime+stime) around
//    the run, the pull-client from its rusage (Bun.spawn resourceUsage()). REPS repetitions; medians.
// 3. Profile: the same drain once more with A's serve and the pull-client both run from source
//    under `bun --cpu-prof`; top self-time functions are summarised (slower: the profiler samples).
// 4. System calls: a drain of min(BACKLOG, 2000) messages with the pull-client under
//    `strace -f -c -w` (skipped without strace): calls per message and time inside them.
// Before each part (and each repetition) it waits up to --quiet-wait seconds for the machine to be
// nearly idle, and records the load average. Prints a markdown report and writes it into
// test/bench/RESULTS.md between the exchanger.bench.ts markers (--no-results skips that).
import { Database } from "bun:sqlite";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, watch, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../helpers/server.ts";
import {
  BIN, ROOT, SAMPLE_REL, childUsage, collectOutput, countFiles, createCleanup, dieWith, finish, fmtDec, fmtInt, loadCpuProfile, loadText,
  machineBusy, machineLine, madmailCli, madmailEnv, madmailHead, median, newMadmailState, now, percentile, procOwnCpu, profileTable,
  requirePositiveIntegers, sh, sleep, stopProc, verdict, waitQuiet as waitQuietFor, type CpuProfile, type MadmailState,
} from "./_lib.ts";

const SAMPLE = readFileSync(join(ROOT, SAMPLE_REL));
/** Only the usual bin directories (not sbin): what this bench and the madmail it starts see. */
const PATH = [process.env.PATH ?? "", "/usr/local/bin", "/usr/bin", "/bin"].filter(Boolean).join(":");
const RCPT = "bob@b.test";
const RELAY_SENDER = "alice@remote.test";
const HELD_SENDER = "alice@a.test";
const GOAL_P50_MS = 50;
const GOAL_RATE = 1000;

const { values } = parseArgs({
  options: {
    latency: { type: "string", default: "500" },
    poller: { type: "string", default: "200" },
    backlog: { type: "string", default: "10000" },
    reps: { type: "string", default: "3" },
    // messages sent after an idle gap (per latency part), the gap, and how long to wait for each
    idle: { type: "string", default: "3" },
    "idle-gap": { type: "string", default: "15" },
    "quiet-wait": { type: "string", default: "45" },
    only: { type: "string", default: "longpoll,poller,drain,profile,syscalls" },
    "keep-profiles": { type: "string" },
    "no-results": { type: "boolean", default: false },
  },
});
const LAT_N = Number(values.latency);
const POLL_N = Number(values.poller);
const BACKLOG = Number(values.backlog);
const REPS = Number(values.reps);
const IDLE_N = Number(values.idle);
const IDLE_GAP = Number(values["idle-gap"]);
/** the bench puller pulls again at once after a failure: 35 s is plenty */
const IDLE_WAIT = 35;
/** B's poller rests poll_interval (60 s) after a failed pull */
const IDLE_WAIT_POLLER = 95;
const QUIET_WAIT = Number(values["quiet-wait"]);
const PARTS = new Set(values.only!.split(",").map((s) => s.trim()));
/** "nearly idle": busy CPU of the whole machine over 1 s, in cores */
const QUIET_CORES = 0.3;
const COMMAND = ["./node_modules/.bin/bun", "test/bench/exchanger.bench.ts", ...process.argv.slice(2)].join(" ");

const die: (msg: string) => never = dieWith("exchanger.bench");
if (!existsSync(BIN)) die(`${BIN} is missing: build it first with ./node_modules/.bin/bun build.ts`);
/** The binary this run uses: a rebuild during the run (others share the checkout) is reported. */
const BIN_MTIME = statSync(BIN).mtimeMs;
requirePositiveIntegers({ latency: LAT_N, poller: POLL_N, backlog: BACKLOG, reps: REPS, "idle-gap": IDLE_GAP }, die);
if (!Number.isInteger(IDLE_N) || IDLE_N < 0) die("--idle must be a whole number");
for (const p of PARTS) if (!["longpoll", "poller", "drain", "profile", "syscalls"].includes(p)) die(`--only: unknown part ${p}`);

// ---------------------------------------------------------------------------------------------
// small helpers

/** Waits (at most QUIET_WAIT s) until the machine is nearly idle (steal counts as busy); returns the busy cores of the last second. */
const waitQuiet = () => waitQuietFor({ maxS: QUIET_WAIT, cores: QUIET_CORES, withSteal: true });

const problems: string[] = [];

// ---------------------------------------------------------------------------------------------
// clean-up of everything started here

const { stoppers, tempDirs, cleanup, track } = createCleanup();

// ---------------------------------------------------------------------------------------------
// madmail state files and servers

type State = MadmailState;

const envFor = (st: State) => madmailEnv(st, PATH);
const newState = (name: string): State => newMadmailState("mm-exch", name, tempDirs);
const cli = (st: State, args: string[]) => madmailCli(st, args, { path: PATH });

const maildirNew = (st: State, addr = RCPT) => join(dirname(st.db), "mail", addr, "new");

/** Makes a token for exchanger NAME at `st` and writes it to a file (mode 600). */
function tokenFile(st: State, name: string): { token: string; file: string } {
  const token = cli(st, ["exchanger", "token", name]).trim();
  const file = join(st.dir, `${name}.token`);
  writeFileSync(file, token + "\n", { mode: 0o600 });
  return { token, file };
}

/** A: a.test with a pull-mode exchanger x for b.test (and relay.domains b.test when relaying). */
function setupA(name: string, relay: boolean): { st: State; token: string; tokenFile: string } {
  const st = newState(name);
  cli(st, ["init", "--domain", "a.test", "--quiet"]);
  cli(st, ["exchanger", "add", "x", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"]);
  if (relay) cli(st, ["config", "set", "relay.domains", "b.test"]);
  const t = tokenFile(st, "x");
  return { st, token: t.token, tokenFile: t.file };
}

/** The pulling side's state: b.test with bob@b.test. */
function setupB(name: string): State {
  const st = newState(name);
  cli(st, ["init", "--domain", "b.test", "--quiet"]);
  cli(st, ["user", "add", RCPT, "--quota", "1G"]);
  return st;
}

interface Server {
  st: State;
  pid: number;
  url: string;
  proc: ReturnType<typeof Bun.spawn>;
  log: string;
  cpu(): { user: number; sys: number };
  stop(signal?: NodeJS.Signals): Promise<void>;
}

async function serve(st: State, profileDir?: string): Promise<Server> {
  const port = await freePort();
  const log = join(st.dir, `serve-${Date.now()}.log`);
  const proc = Bun.spawn(
    [...madmailHead(profileDir), "serve", "--http", `127.0.0.1:${port}`, "--https", "off", "--smtp", "off", "--lmtp", "off", "--submission", "off", "--submissions", "off"],
    { cwd: st.dir, env: envFor(st), stdin: "ignore", stdout: "ignore", stderr: Bun.file(log) },
  );
  const stop = track(`madmail serve ${st.name} pid ${proc.pid}`, proc);
  const url = `http://127.0.0.1:${port}`;
  const end = Date.now() + 20_000;
  while (!(await fetch(`${url}/healthz`).then((r) => r.ok, () => false))) {
    if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > end) {
      await stop("SIGKILL");
      throw new Error(`serve ${st.name} did not come up:\n${existsSync(log) ? readFileSync(log, "utf8").slice(-3000) : ""}`);
    }
    await sleep(50);
  }
  return { st, pid: proc.pid, url, proc, log, cpu: () => procOwnCpu(proc.pid), stop };
}

const withSeq = (seq: number | string) => Buffer.concat([Buffer.from(`X-Seq: ${seq}\n`), SAMPLE]);
const seqOf = (body: Buffer | string) => /^X-Seq: (\S+)/.exec(typeof body === "string" ? body : body.subarray(0, 40).toString("latin1"))?.[1];

/** Puts `n` messages for bob@b.test on hold for exchanger NAME (ids with `prefix`), as the worker would. */
function holdMessages(dbPath: string, name: string, n: number, prefix: string): void {
  const db = new Database(dbPath);
  db.exec("PRAGMA busy_timeout = 10000");
  const t = Date.now();
  const insM = db.prepare("INSERT INTO messages (id, mail_from, body, size, door, auth_user, received_at) VALUES (?, ?, ?, ?, 'send', NULL, ?)");
  const insD = db.prepare(`INSERT INTO deliveries (id, message_id, rcpt_domain, rcpts, state, route, tries, next_attempt_at, lease_until, last_error, created_at, updated_at, expires_at, rerouted_to)
    VALUES (?, ?, 'b.test', '["bob@b.test"]', 'deferred', ?, 1, ?, NULL, 'held', ?, ?, ?, NULL)`);
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const body = withSeq(`${prefix}${i}`);
      const num = String(i).padStart(14, "0");
      const did = `${prefix}d${num}`;
      const mid = `${prefix}m${num}`;
      insM.run(mid, HELD_SENDER, body, body.length, t);
      insD.run(did, mid, `exchanger:${name}`, t + 3600_000, t + i, t, t + 86400_000);
    }
  })();
  db.close();
}

function heldAt(st: State, name: string): number {
  return JSON.parse(cli(st, ["exchanger", "status", name, "--json"])).held as number;
}

// ---------------------------------------------------------------------------------------------
// a puller in this process

interface PullAnswer {
  messages: { id: string; body_base64: string }[];
  more: boolean;
}

async function pullOnce(url: string, token: string, wait: number, max: number, signal?: AbortSignal): Promise<{ answer: PullAnswer; at: number }> {
  const r = await fetch(`${url}/exchanger/pull?wait=${wait}&max=${max}`, { headers: { Authorization: `Bearer ${token}` }, signal });
  const text = await r.text();
  const at = now();
  if (r.status !== 200) throw new Error(`pull: ${r.status} ${text.slice(0, 200)}`);
  return { answer: JSON.parse(text) as PullAnswer, at };
}

async function ackIds(url: string, token: string, ids: string[]): Promise<number> {
  const r = await fetch(`${url}/exchanger/ack`, { method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: JSON.stringify({ ids }) });
  const j = (await r.json()) as { acked?: number };
  if (r.status !== 200) throw new Error(`ack: ${r.status} ${JSON.stringify(j)}`);
  return j.acked ?? 0;
}

async function postMxdeliv(url: string, body: Uint8Array): Promise<number> {
  const r = await fetch(`${url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": RELAY_SENDER, "X-Mail-To": RCPT }, body: body as BodyInit });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`POST /mxdeliv: ${r.status} ${text.slice(0, 200)}`);
  return now();
}

// ---------------------------------------------------------------------------------------------
// results

interface LatencyResult {
  label: string;
  n: number;
  endToEnd: number[];
  post200: number[];
  load: string;
  busyBefore: number;
  cpuA: number;
  cpuASys?: number;
  cpuB?: number;
  cpuBSys?: number;
  wallS: number;
  /** messages sent after IDLE_GAP s without mail */
  idle?: IdleOutcome[];
  /** the bench puller's failed pulls (it pulls again at once) */
  pullErrors?: number;
  pullErrorText?: string;
  pullErrorAfter?: number[];
  /** B's poller warnings */
  pollerLog?: string[];
}
const latencies: LatencyResult[] = [];

interface DrainRep {
  rep: number;
  load: string;
  busyBefore: number;
  wallS: number;
  clientS: number;
  rate: number;
  files: number;
  cpuA: { user: number; sys: number };
  cpuClient: { user: number; sys: number };
  maxRssMb: number;
  otherCores: number;
  /** from A's log: rounds, and the time between handing out a batch and its ack (client at work) */
  rounds: RoundSplit;
  /** the bare fetch loop (A's side only) before it */
  bareS: number;
  bareRate: number;
  bareCpuA: number;
  bareCpuSelf: number;
  ok: boolean;
}
const drains: DrainRep[] = [];
const partLoad: Record<string, string> = {};
let profileText = "";
let profileRun = "";

// ---------------------------------------------------------------------------------------------
// 1: long-poll latency with a puller in this process

/** What became of a message sent after IDLE_GAP s without mail. */
interface IdleOutcome {
  seq: string;
  /** ms from the POST to arrival, NaN if it did not arrive within the wait */
  ms: number;
  /** its delivery at A when it did not arrive: state, and lease left (s) */
  atA?: string;
}

/** The delivery row at A of the message with this X-Seq (read-only look at A's state file). */
function deliveryAtA(st: State, seq: string): string {
  const db = new Database(st.db, { readonly: true });
  try {
    const rows = db.query("SELECT d.state, d.lease_until, m.body FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.route = 'exchanger:x' ORDER BY d.created_at DESC LIMIT 50").all() as { state: string; lease_until: number | null; body: Uint8Array }[];
    const row = rows.find((r) => seqOf(Buffer.from(r.body)) === seq);
    if (!row) return "not found";
    return row.state === "delivering" && row.lease_until ? `leased (state delivering, lease ends in ${Math.round((row.lease_until - Date.now()) / 1000)} s)` : `state ${row.state}`;
  } finally {
    db.close();
  }
}

function idleSummary(xs: IdleOutcome[], waitS = IDLE_WAIT): string {
  return xs.map((x) => (Number.isFinite(x.ms) ? `${fmtDec(x.ms / 1000, 3)} s` : `not there after ${waitS} s: ${x.atA}`)).join("; ");
}

async function partLongpoll(): Promise<void> {
  console.log(`# long-poll latency: ${LAT_N} messages one at a time, POST /mxdeliv at A -> pull answer`);
  const busyBefore = await waitQuiet();
  const load = loadText();
  partLoad.longpoll = load;
  const A = setupA("lp-a", true);
  const a = await serve(A.st);
  const waiters = new Map<string, (at: number) => void>();
  const afterAck: (() => void)[] = [];
  const abort = new AbortController();
  let pulls = 0;
  let emptyPulls = 0;
  let stray = 0;
  const pullErrors: { afterMs: number; message: string }[] = [];
  const puller = (async () => {
    while (!abort.signal.aborted) {
      let res;
      const t = now();
      try {
        res = await pullOnce(a.url, A.token, 30, 50, abort.signal);
      } catch (e) {
        if (abort.signal.aborted) return;
        // a robust client pulls again at once
        pullErrors.push({ afterMs: now() - t, message: (e as Error).message });
        await sleep(10);
        continue;
      }
      pulls++;
      if (!res.answer.messages.length) emptyPulls++;
      const ids: string[] = [];
      const arrived: (() => void)[] = [];
      for (const m of res.answer.messages) {
        const seq = seqOf(Buffer.from(m.body_base64.slice(0, 40), "base64"));
        const w = seq === undefined ? undefined : waiters.get(seq);
        if (w) {
          waiters.delete(seq!);
          arrived.push(() => w(res.at));
        } else stray++;
        ids.push(m.id);
      }
      for (const f of arrived) f();
      if (ids.length) await ackIds(a.url, A.token, ids);
      for (const f of afterAck.splice(0)) f();
    }
  })();
  /** POST one message; resolves when it arrived and its batch was acked (or after `waitS`). */
  const one = async (seq: string, waitS: number) => {
    const arrived = new Promise<number>((r) => waiters.set(seq, r));
    const t0 = now();
    const [t200, tArr] = await Promise.all([postMxdeliv(a.url, withSeq(seq)), Promise.race([arrived, sleep(waitS * 1000).then(() => NaN)])]);
    if (Number.isFinite(tArr)) await new Promise<void>((r) => afterAck.push(r));
    else waiters.delete(seq);
    return { e2e: tArr - t0, post: t200 - t0 };
  };
  try {
    for (let i = 0; i < 20; i++) {
      if (!Number.isFinite((await one(`w${i}`, 35)).e2e)) throw new Error(`warm-up message w${i} did not reach the puller within 35 s`);
    }
    const r: LatencyResult = { label: "pull endpoint long poll (puller in the bench)", n: LAT_N, endToEnd: [], post200: [], load, busyBefore, cpuA: 0, wallS: 0, idle: [], pullErrors: 0 };
    const c0 = a.cpu();
    const w0 = now();
    for (let i = 0; i < LAT_N; i++) {
      const x = await one(String(i), 35);
      if (!Number.isFinite(x.e2e)) throw new Error(`message ${i} did not reach the puller within 35 s`);
      r.endToEnd.push(x.e2e);
      r.post200.push(x.post);
      // the puller is back in its long poll before the next message
      await sleep(2);
    }
    r.wallS = (now() - w0) / 1000;
    const c1 = a.cpu();
    r.cpuA = c1.user + c1.sys - c0.user - c0.sys;
    r.cpuASys = c1.sys - c0.sys;
    const errorsBusy = pullErrors.length;
    console.log(`  p50 ${fmtDec(percentile(r.endToEnd, 50))} ms, p90 ${fmtDec(percentile(r.endToEnd, 90))}, p99 ${fmtDec(percentile(r.endToEnd, 99))}, max ${fmtDec(Math.max(...r.endToEnd))}; POST 200 p50 ${fmtDec(percentile(r.post200, 50))} ms; ${pulls} pulls (${emptyPulls} empty), ${stray} stray, ${errorsBusy} failed pulls`);
    // after an idle gap: the puller has been waiting IDLE_GAP s (longer than Bun.serve's default 10 s idleTimeout)
    for (let i = 0; i < IDLE_N; i++) {
      await sleep(IDLE_GAP * 1000);
      const seq = `idle${i}`;
      const x = await one(seq, IDLE_WAIT);
      const o: IdleOutcome = { seq, ms: x.e2e };
      if (!Number.isFinite(x.e2e)) o.atA = deliveryAtA(A.st, seq);
      r.idle!.push(o);
      console.log(`  after ${IDLE_GAP} s idle: ${idleSummary([o])}`);
    }
    r.pullErrors = pullErrors.length;
    r.pullErrorText = [...new Set(pullErrors.map((e) => e.message.replace(/\. For more information.*$/, "")))].slice(0, 3).join("; ");
    r.pullErrorAfter = pullErrors.map((e) => e.afterMs / 1000);
    latencies.push(r);
    if (stray) problems.push(`long poll: ${stray} message(s) in pull answers that no sender waited for`);
    if (errorsBusy) problems.push(`long poll: ${errorsBusy} failed pull(s) while mail was flowing`);
    const held = heldAt(A.st, "x");
    const stuck = r.idle!.filter((x) => !Number.isFinite(x.ms)).length;
    if (held !== stuck) problems.push(`long poll: ${held} message(s) still held at A afterwards (${stuck} idle-gap message(s) did not arrive)`);
  } finally {
    abort.abort();
    await puller.catch(() => {});
    await a.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 1b: B's own poller, end to end into B's Maildir

async function partPoller(): Promise<void> {
  console.log(`# poller latency: ${POLL_N} messages one at a time, POST /mxdeliv at A -> file in B's Maildir (B's built-in poller)`);
  const busyBefore = await waitQuiet();
  const load = loadText();
  partLoad.poller = load;
  const A = setupA("po-a", true);
  const a = await serve(A.st);
  const B = setupB("po-b");
  cli(B, ["exchanger", "add", "x", a.url]);
  cli(B, ["exchanger", "set", "x", "--remote-token-file", A.tokenFile]);
  const pollInterval = JSON.parse(cli(B, ["exchanger", "list", "--json"]))[0].poll_interval as number;
  const newDir = maildirNew(B);
  mkdirSync(newDir, { recursive: true });
  // Each file's arrival time by X-Seq (inotify on new/), so a late one is not taken for the next.
  const arrivals = new Map<string, number>();
  const waiters = new Map<string, (t: number) => void>();
  const watcher = watch(newDir, (ev, name) => {
    if (ev !== "rename" || !name) return;
    const t = now();
    let seq: string | undefined;
    try {
      seq = seqOf(readFileSync(join(newDir, name)));
    } catch {
      return; // not (or no longer) there
    }
    if (seq === undefined || arrivals.has(seq)) return;
    arrivals.set(seq, t);
    waiters.get(seq)?.(t);
    waiters.delete(seq);
  });
  const b = await serve(B);
  const one = async (seq: string, waitS: number) => {
    const arrived = new Promise<number>((r) => waiters.set(seq, r));
    const t0 = now();
    const [t200, tArr] = await Promise.all([postMxdeliv(a.url, withSeq(seq)), Promise.race([arrived, sleep(waitS * 1000).then(() => NaN)])]);
    if (!Number.isFinite(tArr)) waiters.delete(seq);
    return { e2e: tArr - t0, post: t200 - t0 };
  };
  try {
    for (let i = 0; i < 10; i++) {
      if (!Number.isFinite((await one(`w${i}`, 95)).e2e)) throw new Error(`warm-up message w${i} did not reach B's Maildir within 95 s`);
    }
    const r: LatencyResult = { label: `B's built-in poller (poll interval ${pollInterval} s) → B's Maildir`, n: POLL_N, endToEnd: [], post200: [], load, busyBefore, cpuA: 0, cpuB: 0, wallS: 0, idle: [] };
    const ca0 = a.cpu();
    const cb0 = b.cpu();
    const w0 = now();
    for (let i = 0; i < POLL_N; i++) {
      const x = await one(String(i), 95);
      if (!Number.isFinite(x.e2e)) throw new Error(`message ${i} did not reach B's Maildir within 95 s`);
      r.endToEnd.push(x.e2e);
      r.post200.push(x.post);
      await sleep(2);
    }
    r.wallS = (now() - w0) / 1000;
    const ca1 = a.cpu();
    const cb1 = b.cpu();
    r.cpuA = ca1.user + ca1.sys - ca0.user - ca0.sys;
    r.cpuB = cb1.user + cb1.sys - cb0.user - cb0.sys;
    r.cpuASys = ca1.sys - ca0.sys;
    r.cpuBSys = cb1.sys - cb0.sys;
    console.log(`  p50 ${fmtDec(percentile(r.endToEnd, 50))} ms, p90 ${fmtDec(percentile(r.endToEnd, 90))}, p99 ${fmtDec(percentile(r.endToEnd, 99))}, max ${fmtDec(Math.max(...r.endToEnd))}; POST 200 p50 ${fmtDec(percentile(r.post200, 50))} ms`);
    const filesBusy = countFiles(newDir);
    if (filesBusy !== POLL_N + 10) problems.push(`poller: ${filesBusy} files in B's Maildir after the measured messages, expected ${POLL_N + 10}`);
    for (let i = 0; i < IDLE_N; i++) {
      await sleep(IDLE_GAP * 1000);
      const seq = `idle${i}`;
      const x = await one(seq, IDLE_WAIT_POLLER);
      const o: IdleOutcome = { seq, ms: x.e2e };
      if (!Number.isFinite(x.e2e)) o.atA = deliveryAtA(A.st, seq);
      r.idle!.push(o);
      console.log(`  after ${IDLE_GAP} s idle: ${idleSummary([o], IDLE_WAIT_POLLER)}`);
    }
    r.pollerLog = [...new Set(readFileSync(b.log, "utf8").split("\n").filter((l) => /\[poller\]/.test(l) && /WARN|ERROR/.test(l)).map((l) => l.replace(/^\S+ /, "")))].slice(0, 3);
    latencies.push(r);
    // every X-Seq exactly once
    const seqs = readdirSync(newDir).map((f) => seqOf(readFileSync(join(newDir, f))));
    if (seqs.length !== new Set(seqs).size) problems.push(`poller: ${seqs.length} files but ${new Set(seqs).size} distinct X-Seq`);
    const held = heldAt(A.st, "x");
    const stuck = r.idle!.filter((x) => !Number.isFinite(x.ms)).length;
    if (held !== stuck) problems.push(`poller: ${held} message(s) still held at A afterwards (${stuck} idle-gap message(s) did not arrive)`);
  } finally {
    watcher.close();
    await b.stop();
    await a.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 2: drain

/** Drains `n` held messages with a bare pull/ack loop (nothing stored); returns seconds. */
async function bareDrain(url: string, token: string, n: number): Promise<number> {
  const t0 = now();
  let got = 0;
  for (;;) {
    const { answer } = await pullOnce(url, token, 0, 50);
    if (!answer.messages.length) break;
    got += answer.messages.length;
    await ackIds(url, token, answer.messages.map((m) => m.id));
  }
  if (got !== n) problems.push(`bare drain: got ${got} messages, expected ${n}`);
  return (now() - t0) / 1000;
}

interface ClientRun {
  code: number;
  stdout: string;
  stderr: string;
  wallS: number;
  cpu: { user: number; sys: number };
  maxRssMb: number;
}

async function runPullClient(B: State, url: string, tokenFile: string, profileDir?: string, wrap: string[] = []): Promise<ClientRun> {
  const head = [...wrap, ...madmailHead(profileDir)];
  const t0 = now();
  const proc = Bun.spawn([...head, "pull-client", "--url", url, "--token-file", tokenFile, "--max-time", "600", "--json"], {
    cwd: B.dir, env: envFor(B), stdin: "ignore", stdout: "pipe", stderr: "pipe",
  });
  const key = `pull-client pid ${proc.pid}`;
  stoppers.set(key, () => stopProc(proc, "SIGKILL"));
  const { stdout, stderr, code } = await collectOutput(proc);
  const wallS = (now() - t0) / 1000;
  stoppers.delete(key);
  const ru = childUsage(proc);
  return { code, stdout, stderr, wallS, cpu: { user: ru.user, sys: ru.sys }, maxRssMb: ru.maxRssMb };
}

function verifyMaildir(B: State, what: string, prefix: string, n = BACKLOG): { files: number; ok: boolean } {
  const dir = maildirNew(B);
  const files = readdirSync(dir);
  const seqs = new Set<string>();
  for (const f of files) {
    const s = seqOf(readFileSync(join(dir, f)));
    if (s?.startsWith(prefix)) seqs.add(s);
  }
  const ok = files.length === n && seqs.size === n;
  if (!ok) problems.push(`${what}: ${files.length} files in the Maildir, ${seqs.size} distinct X-Seq, expected ${n}`);
  return { files: files.length, ok };
}

async function drainRep(rep: number): Promise<void> {
  const A = setupA(`dr${rep}-a`, false);
  const B = setupB(`dr${rep}-b`);
  const a = await serve(A.st);
  try {
    // warm-up and A's side alone: a bare pull/ack loop over its own backlog
    holdMessages(A.st.db, "x", BACKLOG, "w");
    await waitQuiet();
    const s0 = process.cpuUsage();
    const cw0 = a.cpu();
    const bareS = await bareDrain(a.url, A.token, BACKLOG);
    const cw1 = a.cpu();
    const s1 = process.cpuUsage(s0);
    holdMessages(A.st.db, "x", BACKLOG, "d");
    if (heldAt(A.st, "x") !== BACKLOG) problems.push(`drain rep ${rep}: held count at A is not ${BACKLOG} before the run`);

    const busyBefore = await waitQuiet();
    const load = loadText();
    const m0 = machineBusy(true);
    const c0 = a.cpu();
    const logOff = statSync(a.log).size;
    const spawnedAt = Date.now();
    const r = await runPullClient(B, a.url, A.tokenFile);
    const exitedAt = Date.now();
    const c1 = a.cpu();
    const rounds = roundSplit(readFileSync(a.log).subarray(logOff).toString("utf8"), spawnedAt, exitedAt);
    const machine = machineBusy(true) - m0;
    const summary = (() => {
      try {
        return JSON.parse(r.stdout) as { pulled: number; delivered: number; seconds: number; error: unknown };
      } catch {
        return null;
      }
    })();
    if (r.code !== 0 || !summary || summary.pulled !== BACKLOG || summary.delivered !== BACKLOG) {
      problems.push(`drain rep ${rep}: pull-client exit ${r.code}, summary ${r.stdout.trim()} ${r.stderr.trim().slice(0, 500)}`);
    }
    const v = verifyMaildir(B, `drain rep ${rep}`, "d");
    const held = heldAt(A.st, "x");
    if (held) problems.push(`drain rep ${rep}: ${held} still held at A afterwards`);
    const cpuA = { user: c1.user - c0.user, sys: c1.sys - c0.sys };
    const d: DrainRep = {
      rep, load, busyBefore, wallS: r.wallS, clientS: summary?.seconds ?? NaN, rate: BACKLOG / r.wallS, files: v.files, cpuA, cpuClient: r.cpu,
      maxRssMb: r.maxRssMb, rounds, otherCores: (machine - cpuA.user - cpuA.sys - r.cpu.user - r.cpu.sys) / r.wallS,
      bareS, bareRate: BACKLOG / bareS, bareCpuA: cw1.user + cw1.sys - cw0.user - cw0.sys, bareCpuSelf: (s1.user + s1.system) / 1e6, ok: v.ok && held === 0 && r.code === 0,
    };
    drains.push(d);
    console.log(`  ${drainLine(d)}`);
  } finally {
    await a.stop();
  }
}

interface RoundSplit {
  rounds: number;
  /** sum over rounds of (ack logged - batch logged): the client receiving, storing and acking */
  clientMs: number;
  /** sum of (next batch logged - previous ack logged): ack answer, next request, A leasing/loading/signing */
  betweenMs: number;
  /** first batch logged - spawn of the pull-client (start-up, first request) */
  firstMs: number;
  /** last ack logged to exit of the pull-client (empty pull, shutdown) */
  lastMs: number;
}

/**
 * A logs `exchanger=x pulled=N bytes=B` when a batch is ready to go (after leasing, loading and
 * signing, before the JSON is sent) and `exchanger=x acked=N` when an ack committed, each with a
 * millisecond timestamp: enough to split a drain into the client's share and the rest.
 */
function roundSplit(logText: string, spawnedAt: number, exitedAt: number): RoundSplit {
  const ev: { t: number; kind: "pulled" | "acked" }[] = [];
  for (const line of logText.split("\n")) {
    const m = /^(\S+Z) .*exchanger=x (pulled|acked)=\d+/.exec(line);
    if (m) ev.push({ t: Date.parse(m[1]!), kind: m[2] as "pulled" | "acked" });
  }
  const r: RoundSplit = { rounds: 0, clientMs: 0, betweenMs: 0, firstMs: NaN, lastMs: NaN };
  let lastPulled = NaN;
  let lastAcked = NaN;
  for (const e of ev) {
    if (e.kind === "pulled") {
      r.rounds++;
      if (Number.isFinite(lastAcked)) r.betweenMs += e.t - lastAcked;
      else r.firstMs = e.t - spawnedAt;
      lastPulled = e.t;
    } else if (Number.isFinite(lastPulled)) {
      r.clientMs += e.t - lastPulled;
      lastAcked = e.t;
      lastPulled = NaN;
    }
  }
  r.lastMs = exitedAt - lastAcked;
  return r;
}

function drainLine(d: DrainRep): string {
  const k = BACKLOG / 1000;
  return `rep ${d.rep}: ${fmtInt(d.rate)} msg/s (${fmtDec(d.wallS, 2)} s spawn to exit; drain ${fmtDec(d.clientS, 2)} s as the client reports), `
    + `CPU-s/1000 msgs: A ${fmtDec((d.cpuA.user + d.cpuA.sys) / k, 3)} (sys ${fmtDec(d.cpuA.sys / k, 3)}), pull-client ${fmtDec((d.cpuClient.user + d.cpuClient.sys) / k, 3)} (sys ${fmtDec(d.cpuClient.sys / k, 3)}), `
    + `pull-client max RSS ${fmtDec(d.maxRssMb, 0)} MB, other load ${fmtDec(d.otherCores, 2)} cores; `
    + `rounds ${d.rounds.rounds}: client ${fmtDec(d.rounds.clientMs / d.rounds.rounds, 1)} ms/round, between ${fmtDec(d.rounds.betweenMs / d.rounds.rounds, 1)} ms/round, first batch after ${fmtInt(d.rounds.firstMs)} ms, exit ${fmtInt(d.rounds.lastMs)} ms after last ack; `
    + `bare pull+ack loop: ${fmtInt(d.bareRate)} msg/s, A ${fmtDec(d.bareCpuA / k, 3)} CPU-s/1000; loadavg before ${d.load}, busy ${fmtDec(d.busyBefore, 2)} cores`;
}

// ---------------------------------------------------------------------------------------------
// 3: profile, from source

function summariseProfile(p: CpuProfile, who: string, note: string): string {
  const { samples, table } = profileTable(p);
  return `**${who}**: ${fmtInt(samples)} samples of the JS thread over the process's life; ${note}\n\n${table}`;
}

async function partProfile(): Promise<void> {
  console.log("# profile: A's serve and the pull-client from source under bun --cpu-prof");
  const work = newState("prof");
  const profA = join(work.dir, "prof-a");
  const profB = join(work.dir, "prof-b");
  mkdirSync(profA);
  mkdirSync(profB);
  const A = setupA("prof-a", false);
  const B = setupB("prof-b");
  const a = await serve(A.st, profA);
  let run: ClientRun;
  let cpuA: number;
  try {
    holdMessages(A.st.db, "x", BACKLOG, "w");
    await bareDrain(a.url, A.token, BACKLOG); // warm-up, as in the drain part
    holdMessages(A.st.db, "x", BACKLOG, "d");
    await waitQuiet();
    partLoad.profile = loadText();
    const c0 = a.cpu();
    run = await runPullClient(B, a.url, A.tokenFile, profB);
    const c1 = a.cpu();
    cpuA = c1.user + c1.sys - c0.user - c0.sys;
    if (run.code !== 0) problems.push(`profile: pull-client exit ${run.code}: ${run.stderr.slice(0, 500)}`);
    verifyMaildir(B, "profile run", "d");
  } finally {
    await a.stop("SIGINT");
  }
  const k = BACKLOG / 1000;
  profileRun = `Profiled run: ${fmtInt(BACKLOG / run.wallS)} msg/s (${fmtDec(run.wallS, 2)} s spawn to exit, from source, both sides sampled every 1 ms); `
    + `CPU-s per 1000 msgs: A ${fmtDec(cpuA / k, 3)}, pull-client ${fmtDec((run.cpu.user + run.cpu.sys) / k, 3)} (sys ${fmtDec(run.cpu.sys / k, 3)}); loadavg before ${partLoad.profile}.`;
  console.log(`  ${profileRun}`);
  const summary = (dir: string, who: string, note: string) => {
    const keep = values["keep-profiles"];
    const p = loadCpuProfile(dir, keep ? { dir: keep, prefix: who.split(" ")[0]! } : undefined);
    if (!p) {
      problems.push(`profile of ${who}: no .cpuprofile written in ${dir}`);
      return "";
    }
    return summariseProfile(p, who, note);
  };
  profileText = [
    summary(profB, "pull-client (pull → accept pipeline → Maildir → ack)", "start-up included."),
    summary(profA, "A (serve: pull endpoint + ack)", "start-up and the warm-up drain (bare pull+ack loop) included."),
  ].filter(Boolean).join("\n\n");
}

// ---------------------------------------------------------------------------------------------
// 4: system calls of the pull-client (strace -f -c -w), a smaller drain; not in the medians

const STRACE = Bun.which("strace", { PATH });
const SYSCALL_N = Math.min(BACKLOG, 2000);
let syscallText = "";

async function partSyscalls(): Promise<void> {
  if (!STRACE) {
    console.log("# syscalls: strace not installed, skipped");
    return;
  }
  console.log(`# syscalls: pull-client under strace -f -c -w, ${SYSCALL_N} messages`);
  const A = setupA("sc-a", false);
  const B = setupB("sc-b");
  const a = await serve(A.st);
  const out = join(B.dir, "strace.txt");
  let run: ClientRun;
  try {
    holdMessages(A.st.db, "x", SYSCALL_N, "w");
    await bareDrain(a.url, A.token, SYSCALL_N);
    holdMessages(A.st.db, "x", SYSCALL_N, "d");
    await waitQuiet();
    partLoad.syscalls = loadText();
    run = await runPullClient(B, a.url, A.tokenFile, undefined, [STRACE, "-f", "-c", "-w", "-o", out]);
    if (run.code !== 0) problems.push(`syscalls: pull-client exit ${run.code}: ${run.stderr.slice(0, 500)}`);
    verifyMaildir(B, "syscalls run", "d", SYSCALL_N);
  } finally {
    await a.stop();
  }
  // strace -c table: % time, seconds, usecs/call, calls, errors, syscall
  const rows: { name: string; secs: number; calls: number; errors: number }[] = [];
  for (const line of (existsSync(out) ? readFileSync(out, "utf8") : "").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !/^\d/.test(f[0]!) || f[f.length - 1] === "total") continue;
    const hasErr = f.length === 6;
    rows.push({ name: f[f.length - 1]!, secs: Number(f[1]), calls: Number(f[3]), errors: hasErr ? Number(f[4]) : 0 });
  }
  if (!rows.length) {
    problems.push(`syscalls: no strace summary in ${out}`);
    return;
  }
  rows.sort((x, y) => y.calls - x.calls);
  const lines = [
    `${SYSCALL_N} messages drained in ${fmtDec(run.wallS, 2)} s under strace (slowed down by it); calls per message and wall-clock time inside each system call summed over all threads (\`strace -f -c -w\`; futex and epoll_pwait2 are mostly idle threads waiting, so their sums exceed the run). Loadavg before ${partLoad.syscalls}.`,
    "",
    "| syscall | calls per message | wall s in it (all threads) | errors |",
    "| --- | ---: | ---: | ---: |",
  ];
  for (const r of rows.slice(0, 14)) lines.push(`| ${r.name} | ${fmtDec(r.calls / SYSCALL_N, 2)} | ${fmtDec(r.secs, 3)} | ${r.errors || ""} |`);
  syscallText = lines.join("\n");
  console.log(syscallText);
}

// ---------------------------------------------------------------------------------------------
// report

function report(): string {
  const out: string[] = [];
  const distBuilt = new Date(BIN_MTIME).toISOString();
  const srcDirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "bin", "build.ts"], { PATH });
  const version = sh([BIN, "--version"], { PATH });
  const head = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], { PATH });
  const fs = sh(["df", "-T", tmpdir()], { PATH }).split("\n")[1]?.split(/\s+/) ?? [];
  out.push(`Date: ${new Date().toISOString()}  `);
  out.push(`Command: \`${COMMAND}\` (from the repository root; dist/madmail built from the working tree)  `);
  out.push(`Machine: ${machineLine(`${fs[1] ?? "?"} (${tmpdir()})`, { PATH })}  `);
  out.push(`Versions: ${version || "madmail ?"} (dist/madmail built ${distBuilt}, repository HEAD ${head || "?"}${srcDirty ? ", src/ with uncommitted changes" : ""}); bun ${Bun.version}  `);
  out.push(`Loadavg before each part: ${Object.entries(partLoad).map(([k, v]) => `${k} ${v}`).join("; ") || "-"} (drain: per repetition below). The machine is shared (2 cores, other developers' test suites); before each part and repetition the script waits up to ${QUIET_WAIT} s for < ${QUIET_CORES} busy cores.`);
  out.push("");

  // goals
  const lp = latencies.find((l) => l.label.startsWith("pull endpoint"));
  const po = latencies.find((l) => l.label.startsWith("B's"));
  if (lp || po || drains.length) {
    out.push("| goal (issue) | measured | |");
    out.push("| --- | --- | --- |");
  }
  if (lp) out.push(`| message accepted at A reaches the waiting puller < ${GOAL_P50_MS} ms p50 | ${fmtDec(percentile(lp.endToEnd, 50))} ms p50 (${lp.n} messages) | ${verdict(percentile(lp.endToEnd, 50) < GOAL_P50_MS)} |`);
  if (lp?.idle?.length) {
    const ok = lp.idle.filter((x) => Number.isFinite(x.ms) && x.ms < GOAL_P50_MS).length;
    out.push(`| same, for a message after ${IDLE_GAP} s without mail (puller waiting) | ${ok} of ${lp.idle.length} under ${GOAL_P50_MS} ms (${idleSummary(lp.idle)}) | ${verdict(ok * 2 > lp.idle.length)} |`);
  }
  if (po) out.push(`| (informational) same through B's own poller into B's Maildir | ${fmtDec(percentile(po.endToEnd, 50))} ms p50 (${po.n} messages)${po.idle?.length ? `; after ${IDLE_GAP} s idle: ${idleSummary(po.idle, IDLE_WAIT_POLLER)}` : ""} | |`);
  if (drains.length) {
    const rate = median(drains.map((d) => d.rate));
    out.push(`| pull-client drains ${fmtInt(BACKLOG)} held 4 KB messages into the Maildir at ≥ ${fmtInt(GOAL_RATE)} msg/s | ${fmtInt(rate)} msg/s median of ${drains.length} (spawn to exit) | ${verdict(rate >= GOAL_RATE)} |`);
  }
  if (lp || po || drains.length) out.push("");

  if (latencies.length) {
    out.push("### Latency, one message at a time");
    out.push("");
    out.push("Measured from just before the `POST /mxdeliv` at A to the pull answer holding the message (read completely) / to the inotify event of the file in B's Maildir new/. \"POST 200\" is A's answer to the POST (message durably queued), in the same runs. CPU per 1000 messages covers the measured messages only.");
    out.push("");
    out.push("| path | messages | p50 ms | p90 ms | p99 ms | max ms | POST 200 p50 / p99 ms | CPU-s per 1000 msgs | loadavg before |");
    out.push("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |");
    for (const l of latencies) {
      const k = l.n / 1000;
      const cpu = `A ${fmtDec(l.cpuA / k, 2)} (kernel ${fmtDec((l.cpuASys ?? NaN) / k, 2)})${l.cpuB !== undefined ? `, B ${fmtDec(l.cpuB / k, 2)} (kernel ${fmtDec((l.cpuBSys ?? NaN) / k, 2)})` : ""}`;
      out.push(`| ${l.label} | ${l.n} | ${fmtDec(percentile(l.endToEnd, 50))} | ${fmtDec(percentile(l.endToEnd, 90))} | ${fmtDec(percentile(l.endToEnd, 99))} | ${fmtDec(Math.max(...l.endToEnd))} | ${fmtDec(percentile(l.post200, 50))} / ${fmtDec(percentile(l.post200, 99))} | ${cpu} | ${l.load} (busy ${fmtDec(l.busyBefore, 2)} cores) |`);
    }
    out.push("");
    const withIdle = latencies.filter((l) => l.idle?.length);
    if (withIdle.length) {
      out.push(`**After a quiet spell.** The runs above send the next message within milliseconds, so a pull never waits long. Real mail is sporadic: then ${IDLE_N} more messages, each after ${IDLE_GAP} s without mail (the puller waiting in its long poll; the bench's puller pulls again at once after a failed pull, B's poller rests its poll interval). Wait for each: ${IDLE_WAIT} s (bench puller) / ${IDLE_WAIT_POLLER} s (B's poller); a message not there by then is looked up in A's state file.`);
      out.push("");
      out.push("| path | each message: POST → arrival, or where it is | failed pulls |");
      out.push("| --- | --- | --- |");
      for (const l of withIdle) {
        const fails = l.pullErrors !== undefined
          ? `${l.pullErrors} (${l.pullErrorText || "-"}; after ${l.pullErrorAfter?.length ? `${fmtDec(Math.min(...l.pullErrorAfter), 1)}-${fmtDec(Math.max(...l.pullErrorAfter), 1)} s` : "-"} of waiting)`
          : (l.pollerLog?.length ? `B's log: ${l.pollerLog.map((x) => `\`${x.replace(/\|/g, "\\|").replace(/`/g, "'")}\``).join("; ")}` : "B's log: no poller warnings");
        out.push(`| ${l.label} | ${idleSummary(l.idle!, l.pullErrors !== undefined ? IDLE_WAIT : IDLE_WAIT_POLLER)} | ${fails} |`);
      }
      out.push("");
    }
  }

  if (drains.length) {
    const k = BACKLOG / 1000;
    const med = (f: (d: DrainRep) => number) => median(drains.map(f));
    out.push(`### Drain: \`madmail pull-client\` empties ${fmtInt(BACKLOG)} held messages (4.8 KB sample + X-Seq)`);
    out.push("");
    out.push("msg/s = messages / time from spawning `madmail pull-client --url A --token-file F --json` to its exit (start-up, lock and state file opening included); the client's own drain time from its JSON summary is shown too. Every repetition checked: exit 0, `pulled`/`delivered` = " + fmtInt(BACKLOG) + ", exactly " + fmtInt(BACKLOG) + " files in bob's Maildir new/ with every X-Seq once, nothing held at A afterwards. The bare loop is this script pulling (max=50) and acking the same number of held messages without storing them, against the same A just before (A's side alone; it also warms A's JIT).");
    out.push("");
    out.push("| | median | per repetition |");
    out.push("| --- | ---: | --- |");
    const row = (label: string, f: (d: DrainRep) => number, fmt: (x: number) => string) => out.push(`| ${label} | ${fmt(med(f))} | ${drains.map((d) => fmt(f(d))).join(", ")} |`);
    row("pull-client msg/s (spawn to exit)", (d) => d.rate, fmtInt);
    row("pull-client time s (spawn to exit)", (d) => d.wallS, (x) => fmtDec(x, 2));
    row("pull-client drain s (its JSON `seconds`)", (d) => d.clientS, (x) => fmtDec(x, 2));
    row("A serve CPU-s per 1000 msgs", (d) => (d.cpuA.user + d.cpuA.sys) / k, (x) => fmtDec(x, 3));
    row("  of which kernel", (d) => d.cpuA.sys / k, (x) => fmtDec(x, 3));
    row("pull-client CPU-s per 1000 msgs", (d) => (d.cpuClient.user + d.cpuClient.sys) / k, (x) => fmtDec(x, 3));
    row("  of which kernel", (d) => d.cpuClient.sys / k, (x) => fmtDec(x, 3));
    row("pull-client max RSS MB", (d) => d.maxRssMb, (x) => fmtDec(x, 0));
    row("batches (A's log)", (d) => d.rounds.rounds, fmtInt);
    row("  ms per batch: batch ready at A → its ack committed (client receives, stores 50, acks)", (d) => d.rounds.clientMs / d.rounds.rounds, (x) => fmtDec(x, 1));
    row("  ms per batch: ack committed → next batch ready at A (ack answer, next pull, A leases, loads)", (d) => d.rounds.betweenMs / d.rounds.rounds, (x) => fmtDec(x, 1));
    row("  ms from spawn to the first batch ready (start-up)", (d) => d.rounds.firstMs, fmtInt);
    row("  ms from the last ack to exit (final empty pull, shutdown)", (d) => d.rounds.lastMs, fmtInt);
    row("other load during the run (cores)", (d) => d.otherCores, (x) => fmtDec(x, 2));
    row("bare pull+ack loop msg/s (A's side alone)", (d) => d.bareRate, fmtInt);
    row("  A serve CPU-s per 1000 msgs in it", (d) => d.bareCpuA / k, (x) => fmtDec(x, 3));
    row("  this script's CPU-s per 1000 msgs in it", (d) => d.bareCpuSelf / k, (x) => fmtDec(x, 3));
    out.push("");
    out.push("Loadavg before each repetition: " + drains.map((d) => `rep ${d.rep}: ${d.load} (busy ${fmtDec(d.busyBefore, 2)} cores)`).join("; ") + ".");
    out.push("");
  }

  if (syscallText) {
    out.push("### System calls of the pull-client (strace; not in the medians)");
    out.push("");
    out.push(syscallText);
    out.push("");
  }
  if (profileText) {
    out.push("### Where the time goes (bun --cpu-prof, from source; not in the medians)");
    out.push("");
    out.push(profileRun);
    out.push("");
    out.push(profileText);
    out.push("");
  }
  out.push(`Validity: ${problems.length ? `**${problems.length} problem(s)**:` : "no problems (every message arrived exactly once, nothing left held)."}`);
  if (problems.length) {
    out.push("");
    out.push("```");
    for (const p of problems) out.push(p);
    out.push("```");
  }
  return out.join("\n");
}

const INTRO = `## Exchangers

What it measures (exchanger.bench.ts): how fast mail held at A for a pull-mode exchanger reaches the
puller (a long-polling client in the bench, and B's built-in poller into B's Maildir), and how fast
\`madmail pull-client\` empties a ${fmtInt(BACKLOG)}-message backlog into a Maildir (\`dist/madmail\`, fresh
state files in temp dirs, everything on 127.0.0.1).`;

// ---------------------------------------------------------------------------------------------
// main

let exitCode = 0;
try {
  if (PARTS.has("longpoll")) await partLongpoll();
  if (PARTS.has("poller")) await partPoller();
  if (PARTS.has("drain")) {
    console.log(`# drain: ${fmtInt(BACKLOG)} held messages, ${REPS} repetitions`);
    for (let rep = 1; rep <= REPS; rep++) await drainRep(rep);
  }
  if (PARTS.has("profile")) await partProfile();
  if (PARTS.has("syscalls")) await partSyscalls();
} catch (e) {
  console.error(e);
  problems.push(`aborted: ${(e as Error).message}`);
  exitCode = 1;
} finally {
  await cleanup();
}

if (existsSync(BIN) && statSync(BIN).mtimeMs !== BIN_MTIME) problems.push(`dist/madmail was rebuilt during the run (now ${statSync(BIN).mtime.toISOString()}): later parts may have run another build`);
const haveData = latencies.length || drains.length || profileText || syscallText;
finish({ report: haveData ? report() : "", heading: INTRO, bench: "exchanger.bench.ts", noResults: values["no-results"], problems, exitCode });
