// Helpers shared by the benchmark scripts (test/bench/*.bench.ts). Not a benchmark itself: run.ts
// only starts files named *.bench.ts. Importing this module has no side effects; the clean-up
// registry installs its signal handlers only when a benchmark creates one.
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, promises as fsp, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { mailOwner, pidsWithCwdUnder } from "../helpers/peers.ts";

export const ROOT = resolve(import.meta.dir, "../..");
/**
 * The compiled binary every benchmark measures (build it with ./node_modules/.bin/bun build.ts),
 * or MADMAIL_BENCH_BIN (to compare another build).
 */
export const BIN = process.env.MADMAIL_BENCH_BIN || join(ROOT, "dist/madmail");
/** The CLI from source, for the `bun --cpu-prof` runs. */
export const SOURCE_ENTRY = join(ROOT, "bin/madmail.ts");
export const RESULTS = join(import.meta.dir, "RESULTS.md");
/** The 4.8 KB Delta Chat message used as a realistic body. */
export const SAMPLE_REL = "test/fixtures/samples/pass-deltachat-2.57-securejoin-request-with-auth.eml";
/** PATH plus the sbin directories: postfix, postconf, smtp-source and smtp-sink live in /usr/sbin. */
export const PATH = [process.env.PATH ?? "", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].filter(Boolean).join(":");
/** C locale, so that the tools' output parsed here does not depend on the caller's language. */
export const ENV = { ...process.env, PATH, LANG: "C", LC_ALL: "C" };

// ---------------------------------------------------------------------------------------------
// small things

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const now = () => performance.now();

/** `dieWith("x.bench")` gives a bench's die(): message on stderr, exit 2 (a precondition, not a result). */
export function dieWith(prefix: string): (msg: string) => never {
  return (msg) => {
    console.error(`${prefix}: ${msg}`);
    process.exit(2);
  };
}

/** Every option value must be a positive integer (parseArgs gives strings; Number() of junk is NaN). */
export function requirePositiveIntegers(options: Record<string, number>, die: (msg: string) => never): void {
  for (const [k, v] of Object.entries(options)) {
    if (!Number.isInteger(v) || v < 1) die(`--${k} must be a positive integer`);
  }
}

/** stdout of a command, trimmed; "" when it cannot be run. The exit code is ignored (wrk --version exits 1). */
export function sh(cmd: string[], env: Record<string, string | undefined> = ENV): string {
  try {
    return Bun.spawnSync(cmd, { env, stdout: "pipe", stderr: "pipe" }).stdout.toString().trim();
  } catch {
    return "";
  }
}

/** Entries in a directory (a Maildir's new/), 0 when it does not exist (yet). */
export function countFiles(dir: string): number {
  try {
    return readdirSync(dir).length;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// statistics and formatting for the reports

/** Median of the finite values (NaN marks a run that measured nothing); NaN when there are none. */
export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile (p in 0..100): always one of the measured values. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** 12,345 (rounded, thousands separators); "n/a" for NaN/Infinity so a missing figure shows as such. */
export const fmtInt = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "n/a");
/** Fixed decimals; "n/a" for NaN/Infinity. */
export const fmtDec = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
export const verdict = (ok: boolean) => (ok ? "met" : "**not met**");

/** "nproc N; CPU M; RAM X GiB; kernel K; temp dirs on T": the "Machine:" line of the reports. */
export function machineLine(tempDirsOn: string, env: Record<string, string | undefined> = ENV): string {
  return [
    `nproc ${sh(["nproc"], env) || cpus().length}`,
    `CPU ${cpus()[0]?.model ?? "?"}`,
    `RAM ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `kernel ${sh(["uname", "-r"], env)}`,
    `temp dirs on ${tempDirsOn}`,
  ].join("; ");
}

/** "ext4 on /dev/sda1": what the temp dirs live on (fsync cost depends on it); "?" if findmnt fails. */
export function tempDirFilesystem(): string {
  return sh(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", tmpdir()]).replace(/\s+/, " on ") || "?";
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc (the servers are other processes; their rusage is only known at exit)

let clkTckValue: number | undefined;
/** Clock ticks per second, the unit of /proc/PID/stat and /proc/stat. */
export function clkTck(): number {
  clkTckValue ??= Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;
  return clkTckValue;
}

/**
 * The fields of /proc/PID/stat (or of one thread: /proc/PID/task/TID/stat) after "(comm)" (comm
 * may hold spaces and parentheses); undefined when gone.
 */
function statFields(pid: number, tid?: number): { comm: string; f: string[] } | undefined {
  try {
    const s = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8");
    const close = s.lastIndexOf(")");
    return { comm: s.slice(s.indexOf("(") + 1, close), f: s.slice(close + 2).split(" ") };
  } catch {
    return undefined; // gone
  }
}

export interface ProcSample {
  /** utime+stime+cutime+cstime in seconds */
  cpu: number;
  /** utime+stime: its own time, without children it reaped */
  own: number;
  comm: string;
  /** a kernel thread (kthreadd's child): jbd2, kworker, ksoftirqd, ... */
  kthread: boolean;
}

export function readProc(pid: number): ProcSample | undefined {
  const s = statFields(pid);
  if (!s) return undefined;
  const { f } = s;
  const tck = clkTck();
  return {
    cpu: (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / tck,
    own: (Number(f[11]) + Number(f[12])) / tck,
    comm: s.comm,
    kthread: pid === 2 || Number(f[1]) === 2,
  };
}

/** utime+stime+cutime+cstime of one process, in seconds (0 when it is gone): children it reaped count. */
export function procCpu(pid: number): number {
  return readProc(pid)?.cpu ?? 0;
}

/** CPU seconds (user+sys) of a process's threads by thread name (digits dropped: "HeapHelper"; "JITWorker": JSC's compiler threads). */
export function threadsByName(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out; // gone
  }
  for (const tid of tids) {
    const s = statFields(pid, Number(tid));
    if (!s) continue;
    const name = Number(tid) === pid ? "main" : s.comm.replace(/[\d\s#:-]+$/, "") || "?";
    out.set(name, (out.get(name) ?? 0) + (Number(s.f[11]) + Number(s.f[12])) / clkTck());
  }
  return out;
}

/** `after - before` per name, largest first, as "name=1.23s ...". */
export function threadsDelta(before: Map<string, number>, after: Map<string, number>): string {
  return [...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const).filter(([, v]) => v >= 0.005)
    .sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k}=${v.toFixed(2)}s`).join(" ");
}

/** stime+cstime of one process in seconds: the kernel part of procCpu (0 when gone). */
export function procSys(pid: number): number {
  const s = statFields(pid);
  return s ? (Number(s.f[12]) + Number(s.f[14])) / clkTck() : 0;
}

/** utime and stime of one process (not its children), or of its thread `tid`, in seconds; NaN when gone. */
export function procOwnCpu(pid: number, tid?: number): { user: number; sys: number } {
  const s = statFields(pid, tid);
  return s ? { user: Number(s.f[11]) / clkTck(), sys: Number(s.f[12]) / clkTck() } : { user: NaN, sys: NaN };
}

/**
 * CPU seconds of a whole Postfix instance (every process whose cwd is below its spool: each daemon
 * chdirs there): live daemons plus what the master reaped from exited ones (cutime/cstime), so
 * daemons that come and go are counted.
 */
export function postfixCpu(spool: string): number {
  return pidsWithCwdUnder(spool).reduce((sum, pid) => sum + procCpu(pid), 0);
}

/** The kernel part of postfixCpu. */
export function postfixSys(spool: string): number {
  return pidsWithCwdUnder(spool).reduce((sum, pid) => sum + procSys(pid), 0);
}

/** VmRSS and VmHWM (peak) of a process in MB; NaN when it is gone, or a throw with ifGone "throw". */
export function memStatus(pid: number, ifGone: "nan" | "throw" = "nan"): { rssMb: number; hwmMb: number } {
  let s: string;
  try {
    s = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch (e) {
    if (ifGone === "throw") throw e;
    return { rssMb: NaN, hwmMb: NaN };
  }
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN);
  return { rssMb: kb("VmRSS") / 1024, hwmMb: kb("VmHWM") / 1024 };
}

/** CPU and peak RSS of an exited child from its rusage (NaN if Bun has none). */
export function childUsage(proc: ReturnType<typeof Bun.spawn>): { total: number; user: number; sys: number; maxRssMb: number } {
  const ru = proc.resourceUsage();
  if (!ru) return { total: NaN, user: NaN, sys: NaN, maxRssMb: NaN };
  return {
    total: Number(ru.cpuTime.total) / 1e6,
    user: Number(ru.cpuTime.user) / 1e6,
    sys: Number(ru.cpuTime.system) / 1e6,
    maxRssMb: ru.maxRSS / 2 ** 20, // bytes (Bun converts getrusage's kilobytes)
  };
}

/** Waits for a piped child to exit and returns what it wrote. */
export async function collectOutput(proc: ReturnType<typeof Bun.spawn>): Promise<{ stdout: string; stderr: string; code: number }> {
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout as ReadableStream).text(), new Response(proc.stderr as ReadableStream).text(), proc.exited]);
  return { stdout, stderr, code };
}

// ---------------------------------------------------------------------------------------------
// the rest of the machine: the benches run on a shared machine, so they record other load

/** The machine's CPU counters in ticks (first line of /proc/stat: user nice system idle iowait irq softirq steal). */
export function machineTicks(): number[] {
  return readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
}

/** Busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq, all CPUs; + steal if asked). */
export function machineBusy(withSteal = false): number {
  const f = machineTicks();
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (withSteal ? f[7]! : 0)) / clkTck();
}

/**
 * Waits until the machine is nearly idle (< `cores` busy over 1 s; the bench's own servers are idle
 * between runs, so what is busy is someone else), at most `maxS` seconds; returns the busy cores of
 * the last second, for the report.
 */
export async function waitQuiet(o: { maxS: number; cores: number; withSteal?: boolean }): Promise<number> {
  const end = Date.now() + o.maxS * 1000;
  for (;;) {
    const a = machineBusy(o.withSteal);
    await sleep(1000);
    const busy = machineBusy(o.withSteal) - a;
    if (busy < o.cores || Date.now() >= end) return busy;
  }
}

/** /proc/loadavg: the three load averages, or with `all` the whole line (+ running/total, last pid). */
export function loadText(all = false): string {
  const s = readFileSync("/proc/loadavg", "utf8").trim();
  return all ? s : s.split(" ").slice(0, 3).join(" ");
}

/**
 * Seconds in which at least one task ("some") or every non-idle task ("full") waited for I/O,
 * from the kernel's pressure stall information (/proc/pressure/io); null where the kernel has
 * none. A run whose cores were idle while it was slow shows here when the disk held it up.
 */
export function ioStall(): { some: number; full: number } | null {
  try {
    const text = readFileSync("/proc/pressure/io", "utf8");
    const total = (kind: string) => Number(new RegExp(`^${kind} .*total=(\\d+)`, "m").exec(text)?.[1] ?? NaN) / 1e6;
    return { some: total("some"), full: total("full") };
  } catch {
    return null;
  }
}

/** "io_stall(some=S full=F)s" between two ioStall() readings, or "" without PSI. */
export function ioStallText(a: ReturnType<typeof ioStall>, b: ReturnType<typeof ioStall>): string {
  if (!a || !b) return "";
  return `io_stall(some=${(b.some - a.some).toFixed(2)}s full=${(b.full - a.full).toFixed(2)}s)`;
}

let probeCount = 0;

/**
 * The directory for one bench's state, marked for the Orlov allocator as the top of a hierarchy
 * (`chattr +T`), so that each system's directory made in it gets block groups of its own.
 * Why: ext4 without a journal (this machine's /) does not reuse an inode freed in the last 60 s
 * (6 min while its inode table block is dirty), and every file create scans past such inodes
 * from the start of its block group, holding the directory's lock. In a new directory in /tmp
 * right after a bench had removed its temp dirs, a create took 0.8 ms instead of 0.02 in one
 * below a `chattr +T` directory (2026-11-22). Postfix removes a queue file for every message,
 * and every bench removes tens of thousands of files at its end: side by side, the next
 * system's Maildir creates could pay for them. In groups of its own, each system pays for its
 * own deletions only. `spread` is false where chattr is missing or the file system has no such
 * flag (the bench runs anyway; file_create in the run lines then shows what the creates cost).
 * Everything below the root goes with it at the clean-up.
 */
export function benchRoot(prefix: string, tempDirs: string[]): { dir: string; spread: boolean } {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  tempDirs.push(dir);
  chmodSync(dir, 0o755); // Postfix's and Dovecot's daemons enter directories below it
  const r = Bun.spawnSync(["chattr", "+T", dir], { env: { PATH }, stdout: "ignore", stderr: "ignore" });
  return { dir, spread: r.exitCode === 0 };
}

/**
 * What creating a file costs in `dir` right now: wall-clock µs per create (open with
 * O_CREAT|O_EXCL, close) of `n` empty files, the median of five groups. The files stay (in
 * `dir/.create-probe/`): removing them would slow the next creates (see benchRoot).
 */
export function createProbeUs(dir: string, n = 100): number {
  const probeDir = join(dir, ".create-probe");
  mkdirSync(probeDir, { recursive: true });
  const per: number[] = [];
  for (let g = 0; g < 5; g++) {
    const t = performance.now();
    for (let i = 0; i < n / 5; i++) closeSync(openSync(join(probeDir, `${process.pid}-${probeCount++}`), "wx", 0o600));
    per.push(((performance.now() - t) * 1000) / (n / 5));
  }
  return per.sort((x, y) => x - y)[2]!;
}

/** One durable small write as the servers do it: create a 4 KB file in `dir`, fsync, close, remove; ms. */
async function fsyncOnce(dir: string): Promise<number> {
  // A name never used before: a probe that failed before its unlink leaves no name to collide with.
  const path = join(dir, `.fsync-probe-${process.pid}-${probeCount++}`);
  const t = performance.now();
  const f = await fsp.open(path, "wx", 0o600);
  try {
    await f.write(PROBE_DATA);
    await f.sync();
  } finally {
    await f.close();
  }
  const ms = performance.now() - t;
  await fsp.unlink(path);
  return ms;
}
const PROBE_DATA = new Uint8Array(4096).fill(0x61);

/**
 * Waits until the disk answers fsync quickly again (five probes in a row under `maxMs` each), at
 * most `maxS` seconds; returns the last five probe times (ms). The latency goals are about the
 * servers, but every message costs them fsyncs, and on this shared disk an fsync can take
 * 100+ ms for a while after a bench has written or removed many files (ext4 with online
 * discard) or while other developers' tests run: both systems are measured after this wait.
 */
export async function waitDiskQuiet(o: { dir: string; maxS: number; maxMs: number }): Promise<number[]> {
  const end = Date.now() + o.maxS * 1000;
  for (;;) {
    const probes: number[] = [];
    for (let i = 0; i < 5; i++) probes.push(await fsyncOnce(o.dir));
    if (probes.every((ms) => ms < o.maxMs) || Date.now() >= end) return probes;
    await sleep(1000);
  }
}

/**
 * Samples the disk's fsync time every `everyMs` while a measurement runs (on the thread pool,
 * so the caller's event loop does not wait); stop() returns the times (ms). A stall that the
 * servers see shows up here too when the disk, not the server, was slow.
 */
export function fsyncSampler(dir: string, everyMs = 100): { stop(): Promise<number[]> } {
  const times: number[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      times.push(await fsyncOnce(dir));
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return times;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// processes and temp dirs started by a bench: stopped by PID, also on ^C

/** SIGTERM (or `signal`), then SIGKILL if it is still there after `graceMs`. */
export async function stopProc(p: ReturnType<typeof Bun.spawn>, signal: NodeJS.Signals = "SIGTERM", graceMs = 20_000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  p.kill(signal);
  await Promise.race([p.exited, sleep(graceMs)]);
  if (p.exitCode === null && p.signalCode === null) {
    p.kill("SIGKILL");
    await p.exited;
  }
}

export interface Cleanup {
  /** name -> stop; stopped in reverse order of registration (servers before what they depend on) */
  stoppers: Map<string, () => Promise<void>>;
  /** removed after everything is stopped */
  tempDirs: string[];
  /** Runs once; later calls get the same promise. */
  cleanup(): Promise<void>;
  /** Registers `proc` under `key`; the returned stop unregisters it, then stopProc()s it. */
  track(key: string, proc: ReturnType<typeof Bun.spawn>, graceMs?: number): (signal?: NodeJS.Signals) => Promise<void>;
}

/**
 * The clean-up of one bench run; on SIGINT/SIGTERM it cleans up and exits 130, so an interrupted
 * run leaves no servers or temp dirs behind. `first` runs before the registered stoppers.
 */
export function createCleanup(first?: () => Promise<void>): Cleanup {
  const stoppers = new Map<string, () => Promise<void>>();
  const tempDirs: string[] = [];
  let cleaned: Promise<void> | undefined;
  const cleanup = () => {
    cleaned ??= (async () => {
      await first?.();
      for (const [name, stop] of [...stoppers].reverse()) await stop().catch((e) => console.error(`stopping ${name}: ${e}`));
      stoppers.clear();
      // BENCH_KEEP_DIRS=1 leaves the state files and Maildirs for a look after a failed run.
      if (process.env.BENCH_KEEP_DIRS !== "1") for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
    })();
    return cleaned;
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      console.error(`\n${sig}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  const track = (key: string, proc: ReturnType<typeof Bun.spawn>, graceMs?: number) => {
    const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
      stoppers.delete(key);
      await stopProc(proc, signal, graceMs);
    };
    stoppers.set(key, () => stop());
    return stop;
  };
  return { stoppers, tempDirs, cleanup, track };
}

/** The test harness's port wait, under the name the benches use. */
export { waitForPort as waitPort } from "../helpers/server.ts";

/**
 * Readies `dir` (a peerDir) for a throw-away Postfix that stores mail for `rcpt` with virtual(8) in
 * a Maildir owned by nobody (a receiver doing durable storage, like madmail); returns the main.cf
 * and master.cf additions for startPostfix and the Maildir's new/.
 */
export function virtualMaildir(dir: string, rcpt: string): { extra: Record<string, string>; masterAppend: string; maildirNew: string } {
  const [local, domain] = rcpt.split("@") as [string, string];
  const owner = mailOwner();
  const vmail = join(dir, "vmail");
  mkdirSync(vmail, { mode: 0o755 });
  chownSync(vmail, owner.uid, owner.gid);
  mkdirSync(join(dir, "etc"), { recursive: true });
  writeFileSync(join(dir, "etc", "vmailbox"), `${rcpt}\t${domain}/${local}/\n`); // back-dated by startPostfix
  return {
    extra: {
      virtual_mailbox_domains: domain,
      virtual_mailbox_base: "@DIR@/vmail",
      virtual_mailbox_maps: "texthash:@DIR@/etc/vmailbox",
      virtual_uid_maps: `static:${owner.uid}`,
      virtual_gid_maps: `static:${owner.gid}`,
      // per-file limit for Maildirs; must not be below the template's message_size_limit
      virtual_mailbox_limit: "0",
    },
    masterAppend: "virtual   unix  -       n       n       -       -       virtual",
    maildirNew: join(vmail, domain, local, "new"),
  };
}

// ---------------------------------------------------------------------------------------------
// madmail state files

export interface MadmailState {
  name: string;
  dir: string;
  db: string;
}

/** A fresh state dir below `parent` (`${prefix}-${name}-XXXXXX`; default tmpdir()), removed by the clean-up. */
export function newMadmailState(prefix: string, name: string, tempDirs: string[], parent = tmpdir()): MadmailState {
  const dir = mkdtempSync(join(parent, `${prefix}-${name}-`));
  tempDirs.push(dir);
  return { name, dir, db: join(dir, "data", "madmail.db") };
}

/** The environment of a madmail command on `st`: its own HOME and state file, nothing inherited. */
export const madmailEnv = (st: { dir: string; db: string }, path = PATH) => ({ PATH: path, HOME: st.dir, NO_COLOR: "1", MADMAIL_DB: st.db });

/** Runs `madmail ARGS` on a state file; throws with its output unless it exits 0; returns stdout. */
export function madmailCli(st: { name?: string; dir: string; db: string }, args: string[], o: { stdin?: string; path?: string } = {}): string {
  const p = Bun.spawnSync([BIN, ...args], {
    cwd: st.dir,
    env: madmailEnv(st, o.path),
    stdin: o.stdin === undefined ? "ignore" : Buffer.from(o.stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  if (p.exitCode !== 0) throw new Error(`madmail ${args.join(" ")}${st.name ? ` (${st.name})` : ""} failed (${p.exitCode}): ${p.stderr.toString()}${p.stdout.toString()}`);
  return p.stdout.toString();
}

/** The command that starts madmail: the compiled binary, or the source under `bun --cpu-prof` writing to `profileDir`. */
export function madmailHead(profileDir?: string): string[] {
  return profileDir ? [process.execPath, "--cpu-prof", `--cpu-prof-dir=${profileDir}`, SOURCE_ENTRY] : [BIN];
}

/** Queue ids as the server makes them: 10 characters of time, 6 random (src/queue/ids.ts). */
const ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
export function queueId(ms: number): string {
  let t = ms;
  let id = "";
  for (let i = 0; i < 10; i++) {
    id = ID_ALPHABET[t % 32]! + id;
    t = Math.floor(t / 32);
  }
  for (let i = 0; i < 6; i++) id += ID_ALPHABET[Math.floor(Math.random() * 32)];
  return id;
}

// ---------------------------------------------------------------------------------------------
// timing a command: hyperfine when installed, else a loop of timed runs

export interface HyperfineResult {
  /** seconds */
  mean: number;
  median: number;
  min: number;
  max: number;
  times: number[];
}

/**
 * `hyperfine -N --warmup 2 --runs N --export-json FILE FLAGS CMD` (no shell: -N; the arguments
 * are single-quoted for hyperfine's own word splitting); `flags` choose what it prints.
 */
export function hyperfine(bin: string, argv: string[], o: { runs: number; json: string; flags: string[]; env: Record<string, string | undefined>; cwd?: string; stdout?: "pipe" | "ignore"; what: string }): HyperfineResult {
  const cmd = argv.map((a) => `'${a}'`).join(" ");
  const p = Bun.spawnSync([bin, "-N", "--warmup", "2", "--runs", String(o.runs), "--export-json", o.json, ...o.flags, cmd], { cwd: o.cwd, env: o.env, stdout: o.stdout ?? "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`${o.what}: ${p.stderr.toString()}`);
  return (JSON.parse(readFileSync(o.json, "utf8")) as { results: HyperfineResult[] }).results[0]!;
}

/** Milliseconds of each of `runs` calls of `fn`, after `warmup` unmeasured ones. */
export function timeRuns(runs: number, fn: () => void, warmup = 0): number[] {
  const times: number[] = [];
  for (let i = 0; i < runs + warmup; i++) {
    const t = performance.now();
    fn();
    if (i >= warmup) times.push(performance.now() - t);
  }
  return times;
}

// ---------------------------------------------------------------------------------------------
// .cpuprofile summary (bun --cpu-prof)

export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
}

/**
 * The .cpuprofile a `bun --cpu-prof` process wrote into `dir` (undefined if none); with `keep`, a
 * copy goes to keep.dir as `${keep.prefix}-NAME` (the temp dir is removed at the end).
 */
export function loadCpuProfile(dir: string, keep?: { dir: string; prefix: string }): CpuProfile | undefined {
  const f = readdirSync(dir).find((x) => x.endsWith(".cpuprofile"));
  if (!f) return undefined;
  if (keep) {
    mkdirSync(keep.dir, { recursive: true });
    writeFileSync(join(keep.dir, `${keep.prefix}-${f}`), readFileSync(join(dir, f)));
  }
  return JSON.parse(readFileSync(join(dir, f), "utf8")) as CpuProfile;
}

function shortUrl(url: string): string {
  if (!url) return "";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) return url.slice(nm + "node_modules/".length);
  const i = url.indexOf("/src/");
  if (i >= 0) return url.slice(i + 1);
  return url.replace(/^.*\//, "");
}

/** Where a function lives: a package, a src/ directory, or the runtime. */
function area(url: string, fn: string): string {
  if (!url) return fn.startsWith("(") ? fn : "(native / runtime)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const i = url.indexOf("/src/");
  if (i >= 0) return url.slice(i + 1).split("/").slice(0, 2).join("/");
  if (url.startsWith("node:") || url.includes("[native code]") || !url.includes("/")) return "(bun runtime: node:* built-ins)";
  return shortUrl(url);
}

/**
 * The top 12 by self time per area and per function, and by inclusive time of madmail's own (src/)
 * functions, as a markdown table. Bun's profiler samples only while JavaScript runs (no idle
 * samples; the time deltas include the gaps), so shares are counted in samples: shares of the JS
 * thread's busy time. `samples` is the total, for the caller's headline.
 */
export function profileTable(p: CpuProfile): { samples: number; table: string } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (id: number) => {
    const cf = byId.get(id)!.callFrame;
    return `${cf.functionName || "(anonymous)"} ${shortUrl(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ""}`.trim();
  };
  const selfFn = new Map<string, number>();
  const selfArea = new Map<string, number>();
  const incl = new Map<string, number>();
  for (const id of p.samples) {
    const n = byId.get(id);
    if (!n) continue;
    const k = keyOf(id);
    selfFn.set(k, (selfFn.get(k) ?? 0) + 1);
    const ar = area(n.callFrame.url, n.callFrame.functionName);
    selfArea.set(ar, (selfArea.get(ar) ?? 0) + 1);
    // inclusive: every madmail (src/) function on the stack, once per sample
    const seen = new Set<string>();
    for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
      const cf = byId.get(x)!.callFrame;
      if (!cf.url.includes("/src/")) continue;
      const kk = keyOf(x);
      if (!seen.has(kk)) {
        seen.add(kk);
        incl.set(kk, (incl.get(kk) ?? 0) + 1);
      }
    }
  }
  const total = p.samples.length;
  const top = (m: Map<string, number>, k: number) => [...m].sort((x, y) => y[1] - x[1]).slice(0, k);
  const pc = (v: number) => `${fmtDec((100 * v) / total, 1)}%`;
  const esc = (k: string) => k.replace(/\|/g, "\\|").replace(/`/g, "'");
  const out: string[] = [];
  out.push("| self time by area | share |  | self time by function | share |  | inclusive, madmail functions | share |");
  out.push("| --- | ---: | --- | --- | ---: | --- | --- | ---: |");
  const ta = top(selfArea, 12);
  const tf = top(selfFn, 12);
  const ti = top(incl, 12);
  for (let i = 0; i < 12; i++) {
    const x = ta[i];
    const y = tf[i];
    const z = ti[i];
    out.push(`| ${x ? esc(x[0]) : ""} | ${x ? pc(x[1]) : ""} |  | ${y ? `\`${esc(y[0])}\`` : ""} | ${y ? pc(y[1]) : ""} |  | ${z ? `\`${esc(z[0])}\`` : ""} | ${z ? pc(z[1]) : ""} |`);
  }
  return { samples: total, table: out.join("\n") };
}

// ---------------------------------------------------------------------------------------------
// the end of a run: report, RESULTS.md, exit code

/** A fenced block of the problems for the report (empty when there are none). */
export function problemsBlock(problems: string[]): string[] {
  return problems.length ? ["", "Problems:", "", "```", ...problems, "```"] : [];
}

/**
 * Puts `content` (its "## ..." heading and the report) into `file` between this bench's
 * generated-section markers, replacing the previous run's section and leaving the other benches'
 * sections alone; appends it when there is none. `header` starts a file that does not exist.
 */
export function writeResultsSection(file: string, bench: string, content: string, header = "# Benchmark results\n"): void {
  const begin = `<!-- BEGIN ${bench} (generated; replaced on every run) -->`;
  const end = `<!-- END ${bench} -->`;
  const section = `${begin}\n${content}\n${end}\n`;
  // re-read right before writing: other benchmarks write their own sections
  let text = existsSync(file) ? readFileSync(file, "utf8") : header;
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) text = text.slice(0, i) + section + text.slice(j + end.length).replace(/^\n/, "");
  else text = text.trimEnd() + "\n\n" + section;
  writeFileSync(file, text);
  console.log(`\nwritten to ${file}`);
}

/**
 * Prints the report (if any), writes it under `heading` into RESULTS.md unless `noResults`, lists
 * the problems on stderr and exits: `exitCode`, or 1 when there were problems.
 */
export function finish(o: { report: string; heading: string; bench: string; noResults: boolean; header?: string; problems: string[]; exitCode: number }): never {
  if (o.report) {
    console.log(`\n${o.report}`);
    if (!o.noResults) writeResultsSection(RESULTS, o.bench, `${o.heading}\n\n${o.report}`, o.header);
  }
  let exitCode = o.exitCode;
  if (o.problems.length) {
    console.error(`\n${o.problems.length} problem(s):\n${o.problems.join("\n")}`);
    exitCode ||= 1;
  }
  process.exit(exitCode);
}
