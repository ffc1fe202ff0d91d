// Throw-away real peers for integration tests: private Postfix and Dovecot instances, swaks,
// smtp-source/smtp-sink, a raw IMAP reader, self-signed certificates and free ports.
//
// Everything listens on 127.0.0.1 only, lives in a directory the caller owns, and is stopped by
// its own stop command / by PID (never by process name: other instances may run on the machine).
// Config templates: test/peers/postfix/{main,master}.cf.in, test/peers/dovecot/dovecot.conf.in.
// Install the binaries with .ci/install-peers.sh. Postfix and Dovecot need root (the Postfix master
// and Dovecot switch users); tests should `test.skipIf(!havePeers().postfix)` etc.
//
//   const dir = peerDir("relay");                   // /tmp/mm-relay-XXXXXX, mode 0755
//   const pf = await startPostfix({ dir, smtpPort: await freePort(),
//     relayDomains: { "a.test": `lmtp:[127.0.0.1]:${lmtpPort}` } });
//   await swaks(["--server", `127.0.0.1:${pf.smtpPort}`, "--from", "x@remote.test", "--to", "bob@a.test"]);
//   await pf.waitForLog(/status=sent/);
//   await pf.stop();
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { SMTPServer, type SMTPServerSession } from "smtp-server";
import { freePort } from "./server.ts";

export { freePort };

const TEMPLATES = resolve(import.meta.dir, "../peers");
/** PATH plus the sbin directories (postfix, dovecot and smtp-sink live in /usr/sbin). */
const PATH = [process.env.PATH ?? "", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].filter(Boolean).join(":");
const ENV = { ...process.env, PATH, LANG: "C", LC_ALL: "C" };
/** Unix socket paths are limited to 108 bytes (sun_path); both servers put sockets below `dir`. */
const MAX_SOCKET_DIR = 80;

// ---------------------------------------------------------------------------------------------
// small utilities

export interface Owner {
  uid: number;
  gid: number;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function which(name: string): string | null {
  return Bun.which(name, { PATH });
}

function need(name: string): string {
  const p = which(name);
  if (!p) throw new Error(`${name} not found (install the peers with .ci/install-peers.sh)`);
  return p;
}

/** Runs a command to completion and captures its output (no shell). */
export async function run(cmd: string[], opts: { stdin?: string | Uint8Array; timeoutMs?: number; env?: Record<string, string | undefined> } = {}): Promise<RunResult> {
  const proc = Bun.spawn(cmd, {
    env: { ...ENV, ...opts.env },
    stdin: opts.stdin === undefined ? "ignore" : new Blob([typeof opts.stdin === "string" ? opts.stdin : new Uint8Array(opts.stdin)]),
    stdout: "pipe",
    stderr: "pipe",
  });
  let timer: Timer | undefined;
  if (opts.timeoutMs) timer = setTimeout(() => proc.kill("SIGKILL"), opts.timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout, stderr };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

function runSync(cmd: string[]): RunResult {
  const r = Bun.spawnSync(cmd, { env: ENV, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** uid/gid of a user (and of a group, default: the user's primary group) from /etc/passwd and /etc/group. */
export function userIds(user: string, group?: string): Owner {
  const pw = readFileSync("/etc/passwd", "utf8").split("\n").map((l) => l.split(":")).find((f) => f[0] === user);
  if (!pw) throw new Error(`no user ${user} in /etc/passwd`);
  let gid = Number(pw[3]);
  if (group !== undefined) {
    const gr = readFileSync("/etc/group", "utf8").split("\n").map((l) => l.split(":")).find((f) => f[0] === group);
    if (!gr) throw new Error(`no group ${group} in /etc/group`);
    gid = Number(gr[2]);
  }
  return { uid: Number(pw[2]), gid };
}

/** The non-root owner for Maildirs that Dovecot reads in tests: nobody:nogroup (65534:65534 on Debian). */
export function mailOwner(): Owner {
  try {
    return userIds("nobody", "nogroup");
  } catch {
    return userIds("nobody");
  }
}

/**
 * A fresh scratch directory for one peer, mode 0755 (Postfix's delivery agents and Dovecot's
 * mail processes run as other users and must be able to enter it), below `parent` (default the
 * temp dir). Short path: sockets live below it.
 */
export function peerDir(label = "peer", parent = tmpdir()): string {
  const dir = mkdtempSync(join(parent, `mm-${label}-`));
  chmodSync(dir, 0o755);
  return dir;
}

/** Throws unless every ancestor of `dir` can be entered by other users (not below /root, no 0700 parents). */
function assertTraversable(dir: string, why: string): void {
  for (let d = dirname(resolve(dir)); ; d = dirname(d)) {
    const mode = statSync(d).mode;
    if ((mode & 0o001) === 0) throw new Error(`${d} (mode ${(mode & 0o777).toString(8)}) is not traversable by other users; ${why}`);
    if (d === "/") break;
  }
}

function prepareDir(dir: string, why: string): void {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  assertTraversable(dir, why);
  if (resolve(dir).length > MAX_SOCKET_DIR) throw new Error(`${dir} is too long for unix socket paths below it (max ${MAX_SOCKET_DIR} chars); use peerDir()`);
}

function render(template: string, vars: Record<string, string>): string {
  const text = readFileSync(join(TEMPLATES, template), "utf8");
  return text.replace(/@([A-Z_]+)@/g, (_m, k: string) => {
    const v = vars[k];
    if (v === undefined) throw new Error(`${template}: no value for @${k}@`);
    return v;
  });
}

function canConnect(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ port, host });
    s.once("connect", () => {
      s.destroy();
      res(true);
    });
    s.once("error", () => res(false));
  });
}

/** Waits until something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(port: number, timeoutMs = 10_000, alive?: () => boolean): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await canConnect(port)) return;
    if (alive && !alive()) throw new Error(`process died before listening on ${port}`);
    await sleep(50);
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
}

// Instances still running when the test process exits are stopped synchronously.
const running = new Map<string, () => void>();
let exitHookInstalled = false;
function onExit(key: string, stopSync: () => void): void {
  running.set(key, stopSync);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const f of running.values()) {
        try {
          f();
        } catch {
          // best effort
        }
      }
    });
  }
}

/** PIDs of processes whose working directory is `dir` or below (every Postfix daemon chdirs to its queue). */
export function pidsWithCwdUnder(dir: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cwd = readlinkSync(`/proc/${e}/cwd`);
      if (cwd === dir || cwd.startsWith(dir + "/")) out.push(Number(e));
    } catch {
      // gone or not ours to read
    }
  }
  return out;
}

/** PIDs whose command line starts with one of `prefixes` (process titles such as "dovecot-<instance_name>/auth"). */
function pidsWithTitle(...prefixes: string[]): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = readFileSync(`/proc/${e}/cmdline`, "utf8");
      if (prefixes.some((p) => cmd.startsWith(p))) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

async function reap(find: () => number[], graceMs: number): Promise<void> {
  const end = Date.now() + graceMs;
  while (find().length > 0 && Date.now() < end) await sleep(50);
  for (const pid of find()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined | null | false, detail: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${detail()}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// availability

export interface PeerAvailability {
  /** postfix + postconf + postqueue installed and we are root (the master must start as root). */
  postfix: boolean;
  /** Dovecot 2.3 installed and we are root (2.4 has another config syntax, see dovecot.conf.in). */
  dovecot: boolean;
  swaks: boolean;
  /** smtp-source and smtp-sink (package postfix). */
  smtpTools: boolean;
  openssl: boolean;
  /** Human-readable reasons for every `false` above. */
  missing: string[];
}

let availability: PeerAvailability | undefined;

/** Which peers can run here; cached. Use with `test.skipIf(!havePeers().postfix)`. */
export function havePeers(): PeerAvailability {
  if (availability) return availability;
  const missing: string[] = [];
  const root = isRoot();
  const has = (...names: string[]) => {
    const absent = names.filter((n) => !which(n));
    if (absent.length) missing.push(`not installed: ${absent.join(", ")}`);
    return absent.length === 0;
  };
  let postfix = has("postfix", "postconf", "postqueue");
  if (postfix && !root) {
    missing.push("postfix: needs root");
    postfix = false;
  }
  let dovecot = has("dovecot", "doveadm");
  if (dovecot) {
    const v = dovecotVersion();
    if (!v.startsWith("2.3.")) {
      missing.push(`dovecot ${v}: only 2.3 config syntax is supported`);
      dovecot = false;
    } else if (!root) {
      missing.push("dovecot: needs root");
      dovecot = false;
    }
  }
  availability = { postfix, dovecot, swaks: has("swaks"), smtpTools: has("smtp-source", "smtp-sink"), openssl: has("openssl"), missing };
  return availability;
}

function dovecotVersion(): string {
  const p = which("dovecot");
  return p ? runSync([p, "--version"]).stdout.trim() : "";
}

// ---------------------------------------------------------------------------------------------
// TLS

/**
 * Self-signed certificate (RSA 2048, 30 days) in dir/cert.pem + dir/key.pem with CN `cn` and
 * SANs DNS:cn, DNS:localhost, IP:127.0.0.1 plus `sans` ("DNS:x.test", "IP:10.0.0.1").
 * The key is made world-readable: a throw-away key that non-root servers under test may need.
 */
export async function makeCert(dir: string, cn: string, sans: string[] = []): Promise<{ cert: string; key: string }> {
  mkdirSync(dir, { recursive: true });
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const san = [...new Set([`DNS:${cn}`, "DNS:localhost", "IP:127.0.0.1", ...sans])].join(",");
  const r = await run([need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", `/CN=${cn}`, "-addext", `subjectAltName=${san}`, "-keyout", key, "-out", cert]);
  if (r.code !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  chmodSync(key, 0o644);
  return { cert, key };
}

// ---------------------------------------------------------------------------------------------
// Postfix

export interface PostfixOptions {
  /** Instance directory (peerDir()); gets etc/ (config_directory), spool/ (queue), data/, maillog. */
  dir: string;
  /** smtpd listens on 127.0.0.1:smtpPort. */
  smtpPort: number;
  /**
   * domain -> transport, e.g. { "a.test": "lmtp:[127.0.0.1]:8024", "b.test": "smtp:[127.0.0.1]:2525" }.
   * A key "user@domain" routes one address (Mailman style) and makes its domain a relay domain.
   * Other domains get "554 Relay access denied" unless relayhost is set.
   */
  relayDomains: Record<string, string>;
  /** e.g. "[127.0.0.1]:2525": then every other domain goes there, and 127.0.0.0/8 may relay. */
  relayhost?: string;
  /** Offer STARTTLS on smtpd (smtpd_tls_security_level = may) with this certificate. */
  tls?: { cert: string; key: string };
  /** main.cf overrides/additions; "@DIR@" in a value becomes `dir`. */
  extra?: Record<string, string>;
  /** Lines appended to master.cf (more smtpd listeners, -o overrides); "@DIR@" becomes `dir`. */
  masterAppend?: string;
  /** myhostname (default "postfix.test"); shows in the banner, Received: and LHLO. */
  hostname?: string;
}

export interface PostfixInstance {
  dir: string;
  /** config_directory: use with `postconf -c`, `postqueue -c`, `postfix -c`. */
  configDir: string;
  smtpPort: number;
  /** The instance's maillog (empty string before anything was logged). */
  logs(): string;
  /** Resolves with the first maillog line matching `pattern`; throws with the log after timeoutMs. */
  waitForLog(pattern: RegExp | string, timeoutMs?: number): Promise<string>;
  /** `postqueue -p` output ("Mail queue is empty" when empty). */
  queue(): string;
  /** `postqueue -f`: retry every deferred message now. */
  flush(): Promise<void>;
  /** `postfix reload` after a test changed main.cf or the maps in configDir. */
  reload(): Promise<void>;
  /** `postfix stop`, then makes sure no process of this instance remains. Idempotent. */
  stop(): Promise<void>;
}

function applyMainCfOverrides(text: string, extra: Record<string, string>): string {
  const left = new Map(Object.entries(extra));
  for (const [k, v] of left) {
    if (!/^[a-z0-9_]+$/.test(k)) throw new Error(`bad main.cf parameter name: ${k}`);
    if (/[\r\n]/.test(v)) throw new Error(`main.cf value of ${k} contains a newline`);
  }
  const lines = text.split("\n").map((line) => {
    const m = /^([a-z0-9_]+)\s*=/.exec(line);
    const key = m?.[1];
    if (key !== undefined && left.has(key)) {
      const v = left.get(key);
      left.delete(key);
      return `${key} = ${v}`;
    }
    return line;
  });
  if (left.size) lines.push("# --- extra settings of this test ---", ...[...left].map(([k, v]) => `${k} = ${v}`), "");
  return lines.join("\n");
}

/**
 * Starts a private Postfix instance (needs root). Nothing under /etc/postfix is read except
 * the package's meta files (postfix-files, dynamicmaps.cf); no postmulti, no system instance.
 */
export async function startPostfix(opts: PostfixOptions): Promise<PostfixInstance> {
  const postfix = need("postfix");
  const postqueue = need("postqueue");
  const dir = resolve(opts.dir);
  prepareDir(dir, "Postfix daemons (user postfix) must reach the queue; use peerDir()");
  const configDir = join(dir, "etc");
  const spool = join(dir, "spool");
  const data = join(dir, "data");
  const maillog = join(dir, "maillog");
  for (const d of [configDir, spool, data]) mkdirSync(d, { recursive: true });
  // queue_directory must belong to root (postfix-script creates the subdirectories with the right
  // owners); data_directory to mail_owner.
  chownSync(spool, 0, 0);
  const pf = userIds("postfix");
  chownSync(data, pf.uid, pf.gid);
  chmodSync(data, 0o700);

  const domains = new Set<string>();
  const transport: string[] = [];
  for (const [key, t] of Object.entries(opts.relayDomains)) {
    if (/\s/.test(key) || /[\r\n]/.test(t)) throw new Error(`bad relay route ${key} -> ${t}`);
    domains.add(key.includes("@") ? key.slice(key.lastIndexOf("@") + 1) : key);
    transport.push(`${key}\t${t}`);
  }
  writeFileSync(join(configDir, "relay_domains"), [...domains].map((d) => `${d}\tOK`).join("\n") + "\n");
  writeFileSync(join(configDir, "transport"), transport.join("\n") + "\n");

  const sub = (s: string) => s.replaceAll("@DIR@", dir);
  const main = render("postfix/main.cf.in", {
    DIR: dir,
    HOSTNAME: opts.hostname ?? "postfix.test",
    RELAYHOST: opts.relayhost ?? "",
    RELAY_RESTRICTIONS: opts.relayhost ? "permit_mynetworks, reject_unauth_destination" : "reject_unauth_destination",
    DEFAULT_TRANSPORT: opts.relayhost ? "smtp" : "error:no route to this domain in this test instance",
    SMTPD_TLS_LEVEL: opts.tls ? "may" : "none",
    TLS_CERT: opts.tls?.cert ?? "",
    TLS_KEY: opts.tls?.key ?? "",
  });
  const extra = Object.fromEntries(Object.entries(opts.extra ?? {}).map(([k, v]) => [k, sub(v)]));
  writeFileSync(join(configDir, "main.cf"), applyMainCfOverrides(main, extra));
  let master = render("postfix/master.cf.in", { SMTP_LISTEN: `127.0.0.1:${opts.smtpPort}` });
  if (opts.masterAppend) master += "\n# --- appended by the test ---\n" + sub(opts.masterAppend).trimEnd() + "\n";
  writeFileSync(join(configDir, "master.cf"), master);

  // Postfix re-reads a main.cf or texthash: table younger than ~2 s, sleeping 300 ms between tries,
  // until it is "stable": back-date what we wrote (saves ~2 s per start).
  const past = new Date(Date.now() - 60_000);
  for (const f of readdirSync(configDir)) utimesSync(join(configDir, f), past, past);

  const logs = () => (existsSync(maillog) ? readFileSync(maillog, "utf8") : "");
  const start = await run([postfix, "-c", configDir, "start"], { timeoutMs: 30_000 });
  if (start.code !== 0) throw new Error(`postfix start failed (${start.code}): ${start.stderr}${start.stdout}\n${logs()}`);

  let stopped = false;
  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    runSync([postfix, "-c", configDir, "stop"]);
    for (const pid of pidsWithCwdUnder(spool)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  };
  onExit(`postfix:${configDir}`, stopSync);

  const instance: PostfixInstance = {
    dir,
    configDir,
    smtpPort: opts.smtpPort,
    logs,
    async waitForLog(pattern, timeoutMs = 15_000) {
      const re = typeof pattern === "string" ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : pattern;
      return waitFor(`maillog line ${re}`, timeoutMs, () => logs().split("\n").find((l) => re.test(l)), () => `--- ${maillog} ---\n${logs()}`);
    },
    queue() {
      const r = runSync([postqueue, "-c", configDir, "-p"]);
      return r.stdout + r.stderr;
    },
    async flush() {
      const r = await run([postqueue, "-c", configDir, "-f"]);
      if (r.code !== 0) throw new Error(`postqueue -f failed: ${r.stderr}`);
    },
    async reload() {
      const r = await run([postfix, "-c", configDir, "reload"]);
      if (r.code !== 0) throw new Error(`postfix reload failed: ${r.stderr}`);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      running.delete(`postfix:${configDir}`);
      await run([postfix, "-c", configDir, "stop"], { timeoutMs: 30_000 });
      await reap(() => pidsWithCwdUnder(spool), 5_000);
    },
  };
  try {
    await waitForPort(opts.smtpPort, 10_000);
  } catch (e) {
    await instance.stop();
    throw new Error(`${(e as Error).message}\n${logs()}`);
  }
  return instance;
}

// ---------------------------------------------------------------------------------------------
// Dovecot

export interface DovecotOptions {
  /** Instance directory (peerDir()): dovecot.conf, users, run/ (base_dir), state/, dovecot.log. */
  dir: string;
  imapPort: number;
  /** Maildir root: user X's INBOX is <mailRoot>/X/{cur,new,tmp} (madmail's layout). */
  mailRoot: string;
  users: { address: string; password: string }[];
  /**
   * Owner of the Maildirs; Dovecot's mail processes run as this uid/gid. Must not be 0: Dovecot
   * refuses root ("invalid UID 0"). Use mailOwner() (nobody:nogroup) and have the writer (madmail's
   * mail.uid/mail.gid settings, or the test) create the Maildir files as that owner.
   */
  uid: number;
  gid: number;
  /** With a certificate: STARTTLS on imapPort, and implicit TLS on imapsPort if given. */
  tls?: { cert: string; key: string };
  imapsPort?: number;
}

export interface DovecotInstance {
  dir: string;
  configFile: string;
  imapPort: number;
  pid: number;
  logs(): string;
  /** Rewrites the users file (Dovecot re-reads it on the next login, no reload needed). */
  setUsers(users: { address: string; password: string }[]): void;
  /** SIGTERM to the master, then makes sure none of its processes remains. Idempotent. */
  stop(): Promise<void>;
}

function usersFile(users: { address: string; password: string }[]): string {
  return (
    users
      .map(({ address, password }) => {
        if (/[:\s]/.test(address) || /[:\r\n]/.test(password)) throw new Error(`address/password unusable in a passwd-file: ${address}`);
        return `${address}:{PLAIN}${password}::::::`;
      })
      .join("\n") + "\n"
  );
}

/** Starts a private Dovecot 2.3 (IMAP only) in the foreground under this process (needs root). */
export async function startDovecot(opts: DovecotOptions): Promise<DovecotInstance> {
  const dovecot = need("dovecot");
  const version = dovecotVersion();
  if (!version.startsWith("2.3.")) throw new Error(`Dovecot ${version}: test/peers/dovecot/dovecot.conf.in is written for 2.3`);
  if (opts.uid === 0 || opts.gid === 0) throw new Error("Dovecot refuses uid/gid 0 for mail users: give the Maildirs a non-root owner, e.g. mailOwner()");
  const dir = resolve(opts.dir);
  prepareDir(dir, "Dovecot's login processes (dovenull) chroot below it; use peerDir()");
  const mailRoot = resolve(opts.mailRoot);
  if (!existsSync(mailRoot)) {
    mkdirSync(mailRoot, { recursive: true });
    chownSync(mailRoot, opts.uid, opts.gid); // Dovecot may create missing user Maildirs in it
  }
  assertTraversable(join(mailRoot, "x"), `the mail uid ${opts.uid} must reach ${mailRoot}`);

  const configFile = join(dir, "dovecot.conf");
  const logFile = join(dir, "dovecot.log");
  const instanceName = `mmdc${process.pid}-${opts.imapPort}`;
  const tlsBlock = opts.tls
    ? `ssl = yes\nssl_cert = <${opts.tls.cert}\nssl_key = <${opts.tls.key}\nssl_min_protocol = TLSv1.2`
    : "ssl = no";
  writeFileSync(
    configFile,
    render("dovecot/dovecot.conf.in", {
      DIR: dir,
      INSTANCE: instanceName,
      TLS_BLOCK: tlsBlock,
      UID: String(opts.uid),
      GID: String(opts.gid),
      MAILROOT: mailRoot,
      IMAP_PORT: String(opts.imapPort),
      IMAPS_PORT: String(opts.tls && opts.imapsPort ? opts.imapsPort : 0),
    }),
  );
  const setUsers = (users: { address: string; password: string }[]) => writeFileSync(join(dir, "users"), usersFile(users), { mode: 0o644 });
  setUsers(opts.users);

  // -F: stay in the foreground, so the master's PID is the spawned PID.
  const proc = Bun.spawn([dovecot, "-F", "-c", configFile], { env: ENV, stdin: "ignore", stdout: "ignore", stderr: Bun.file(join(dir, "stderr.log")) });
  const logs = () => [logFile, join(dir, "stderr.log")].filter(existsSync).map((f) => readFileSync(f, "utf8")).join("");
  const leftovers = () => pidsWithTitle(`dovecot-${instanceName}/`, `${instanceName}/`).concat(proc.exitCode === null ? [proc.pid] : []);
  let stopped = false;
  onExit(`dovecot:${configFile}`, () => {
    if (stopped) return;
    stopped = true;
    for (const pid of leftovers()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  });

  const instance: DovecotInstance = {
    dir,
    configFile,
    imapPort: opts.imapPort,
    pid: proc.pid,
    logs,
    setUsers,
    async stop() {
      if (stopped) return;
      stopped = true;
      running.delete(`dovecot:${configFile}`);
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, sleep(5_000)]);
      await reap(leftovers, 2_000);
    },
  };
  try {
    await waitForPort(opts.imapPort, 10_000, () => proc.exitCode === null);
  } catch (e) {
    await instance.stop();
    throw new Error(`dovecot did not start: ${(e as Error).message}\n${logs()}`);
  }
  return instance;
}

/**
 * Delivers `raw` into <mailRoot>/<address>/new the way a Maildir writer must (tmp/ then rename),
 * creating the Maildir, everything owned by `owner` (Dovecot needs to write the directories).
 * Returns the path in new/.
 */
export function dropMessage(mailRoot: string, address: string, raw: string | Uint8Array, owner: Owner = mailOwner()): string {
  const md = join(mailRoot, address);
  for (const d of [mailRoot, md, join(md, "cur"), join(md, "new"), join(md, "tmp")]) {
    if (!existsSync(d)) {
      mkdirSync(d, { mode: 0o700 });
      chownSync(d, owner.uid, owner.gid);
    }
  }
  const name = `${Math.floor(Date.now() / 1000)}.M${Math.floor(Math.random() * 1e6)}P${process.pid}.test`;
  const tmp = join(md, "tmp", name);
  writeFileSync(tmp, raw, { mode: 0o600 });
  chownSync(tmp, owner.uid, owner.gid);
  const final = join(md, "new", name);
  renameSync(tmp, final);
  return final;
}

// ---------------------------------------------------------------------------------------------
// IMAP (raw, over TCP; no TLS)

interface ImapResponse {
  text: string;
  literals: Buffer[];
}

class ImapConn {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private failure: Error | undefined;
  private tagN = 0;
  private readonly sock;

  constructor(port: number, host: string) {
    this.sock = connect({ port, host });
    this.sock.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    const fail = (e: Error) => {
      this.failure ??= e;
      this.wake?.();
    };
    this.sock.on("error", fail);
    this.sock.on("close", () => fail(new Error("IMAP connection closed")));
  }

  private async more(): Promise<void> {
    if (this.failure) throw this.failure;
    await new Promise<void>((r) => (this.wake = r));
    this.wake = undefined;
  }

  private async line(): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf("\r\n");
      if (i >= 0) {
        const l = this.buf.subarray(0, i).toString("utf8");
        this.buf = this.buf.subarray(i + 2);
        return l;
      }
      await this.more();
    }
  }

  private async bytes(n: number): Promise<Buffer> {
    while (this.buf.length < n) await this.more();
    const b = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    return b;
  }

  /** One response; a line ending in {N} is followed by N literal bytes and the rest of the response. */
  async response(): Promise<ImapResponse> {
    let text = "";
    const literals: Buffer[] = [];
    for (;;) {
      const l = await this.line();
      text += l;
      const m = /\{(\d+)\+?\}$/.exec(l);
      if (!m) return { text, literals };
      literals.push(await this.bytes(Number(m[1])));
    }
  }

  /** Sends a command; returns the untagged responses; throws unless the tagged reply is OK. */
  async command(cmd: string): Promise<ImapResponse[]> {
    const tag = `t${++this.tagN}`;
    this.sock.write(`${tag} ${cmd}\r\n`);
    const untagged: ImapResponse[] = [];
    for (;;) {
      const r = await this.response();
      if (r.text.startsWith(`${tag} `)) {
        if (!r.text.startsWith(`${tag} OK`)) throw new Error(`IMAP ${cmd.split(" ")[0]} failed: ${r.text}`);
        return untagged;
      }
      untagged.push(r);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

const imapQuote = (s: string) => `"${s.replace(/[\\"]/g, (c) => "\\" + c)}"`;

/**
 * Logs in over plain IMAP, EXAMINEs the mailbox (read-only: nothing is marked \Seen) and returns
 * its message count and the raw text of message `seq` (default 1; null when there is none).
 * Throws with the server's reply when LOGIN fails.
 */
export async function imapFetch(
  port: number,
  user: string,
  pass: string,
  opts: { mailbox?: string; seq?: number; host?: string; timeoutMs?: number } = {},
): Promise<{ count: number; message: string | null }> {
  const conn = new ImapConn(port, opts.host ?? "127.0.0.1");
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_r, rej) => {
    timer = setTimeout(() => rej(new Error(`IMAP exchange with port ${port} timed out`)), opts.timeoutMs ?? 10_000);
  });
  const work = async () => {
    const greeting = await conn.response();
    if (!greeting.text.startsWith("* OK")) throw new Error(`IMAP greeting: ${greeting.text}`);
    await conn.command(`LOGIN ${imapQuote(user)} ${imapQuote(pass)}`);
    const sel = await conn.command(`EXAMINE ${imapQuote(opts.mailbox ?? "INBOX")}`);
    let count = 0;
    for (const r of sel) {
      const m = /^\* (\d+) EXISTS/i.exec(r.text);
      if (m) count = Number(m[1]);
    }
    const seq = opts.seq ?? 1;
    let message: string | null = null;
    if (count >= seq) {
      const f = await conn.command(`FETCH ${seq} BODY.PEEK[]`);
      const lit = f.find((r) => /^\* \d+ FETCH/i.test(r.text) && r.literals.length > 0)?.literals[0];
      message = lit ? lit.toString("utf8") : null;
    }
    await conn.command("LOGOUT").catch(() => undefined);
    return { count, message };
  };
  try {
    return await Promise.race([work(), timeout]);
  } finally {
    if (timer) clearTimeout(timer);
    conn.close();
  }
}

// ---------------------------------------------------------------------------------------------
// swaks, smtp-source, smtp-sink

/** Runs swaks; `out` is stdout followed by stderr. Non-zero `code` when the transaction failed. */
export async function swaks(args: string[], opts: { stdin?: string; timeoutMs?: number } = {}): Promise<{ code: number; out: string }> {
  const r = await run([need("swaks"), ...args], { stdin: opts.stdin, timeoutMs: opts.timeoutMs ?? 60_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

/** Runs Postfix's smtp-source load generator, e.g. ["-s", "5", "-m", "100", "-f", "a@x", "-t", "b@y", "127.0.0.1:2525"]. */
export async function smtpSource(args: string[], opts: { timeoutMs?: number } = {}): Promise<{ code: number; out: string }> {
  const r = await run([need("smtp-source"), ...args], { timeoutMs: opts.timeoutMs ?? 120_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

/**
 * Starts Postfix's smtp-sink on 127.0.0.1:port (LMTP with lmtp: true). With dumpDir, every
 * transaction is written to a file there (the directory is made writable for `user`).
 * As root it runs as `user` (default nobody), which smtp-sink requires.
 */
export async function smtpSink(opts: { port: number; lmtp?: boolean; dumpDir?: string; backlog?: number; user?: string; args?: string[] }): Promise<{ pid: number; stop(): Promise<void> }> {
  const cmd = [need("smtp-sink")];
  const user = opts.user ?? "nobody";
  if (isRoot()) cmd.push("-u", user);
  if (opts.lmtp) cmd.push("-L");
  if (opts.dumpDir) {
    mkdirSync(opts.dumpDir, { recursive: true });
    if (isRoot()) {
      const o = userIds(user);
      chownSync(opts.dumpDir, o.uid, o.gid);
    }
    cmd.push("-d", join(opts.dumpDir, "%H%M%S."));
  }
  cmd.push(...(opts.args ?? []), `127.0.0.1:${opts.port}`, String(opts.backlog ?? 64));
  const proc = Bun.spawn(cmd, { env: ENV, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  let stopped = false;
  const key = `smtp-sink:${proc.pid}`;
  onExit(key, () => proc.kill("SIGKILL"));
  await waitForPort(opts.port, 10_000, () => proc.exitCode === null);
  return {
    pid: proc.pid,
    async stop() {
      if (stopped) return;
      stopped = true;
      running.delete(key);
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, sleep(3_000)]);
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// capture server: an in-process SMTP/LMTP next hop (npm smtp-server) that records transactions

export interface Captured {
  mailFrom: string;
  rcptTo: string[];
  /** The message as received (CRLF line ends, dot-unstuffed). */
  data: string;
  /** EHLO/HELO/LHLO argument and the opening command ("EHLO", "LHLO", ...). */
  helo: string;
  opening: string;
  /** STARTTLS was used. */
  secure: boolean;
}

export interface CaptureServer {
  port: number;
  /** Every transaction so far, oldest first. */
  messages: Captured[];
  /** Resolves with the next transaction not yet returned by next() (waits up to timeoutMs). */
  next(timeoutMs?: number): Promise<Captured>;
  close(): Promise<void>;
}

/**
 * Starts an SMTP (or, with lmtp: true, LMTP) server on 127.0.0.1 that accepts every sender and
 * recipient (except rejectRecipients), without AUTH, and records each transaction. STARTTLS only with `tls`.
 */
export async function startCapture(
  opts: { lmtp?: boolean; tls?: { cert: string; key: string }; port?: number; /** answered "550 5.1.1 User unknown" at RCPT */ rejectRecipients?: string[] } = {},
): Promise<CaptureServer> {
  const reject = new Set((opts.rejectRecipients ?? []).map((a) => a.toLowerCase()));
  const port = opts.port ?? (await freePort());
  const messages: Captured[] = [];
  let taken = 0;
  let wake: (() => void) | undefined;
  const server = new SMTPServer({
    lmtp: opts.lmtp ?? false,
    disableReverseLookup: true,
    authOptional: true,
    disabledCommands: ["AUTH"],
    hideSTARTTLS: !opts.tls,
    ...(opts.tls ? { key: readFileSync(opts.tls.key), cert: readFileSync(opts.tls.cert) } : {}),
    logger: false,
    size: 64 * 1024 * 1024,
    // Postfix reuses LMTP connections and smtp-source sends many messages per session
    maxAllowedUnauthenticatedCommands: false,
    closeTimeout: 1_000,
    onRcptTo(address, _session, callback) {
      if (!reject.has(address.address.toLowerCase())) return callback();
      callback(Object.assign(new Error("5.1.1 User unknown"), { responseCode: 550 }));
    },
    onData(stream, session: SMTPServerSession, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const env = session.envelope;
        messages.push({
          mailFrom: env.mailFrom ? env.mailFrom.address : "",
          rcptTo: env.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks).toString("utf8"),
          helo: session.hostNameAppearsAs,
          opening: session.openingCommand,
          secure: session.secure,
        });
        wake?.();
        callback();
      });
    },
  });
  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(port, "127.0.0.1", () => res());
  });
  server.on("error", () => undefined);
  return {
    port,
    messages,
    async next(timeoutMs = 15_000) {
      const end = Date.now() + timeoutMs;
      while (taken >= messages.length) {
        const left = end - Date.now();
        if (left <= 0) throw new Error(`no ${opts.lmtp ? "LMTP" : "SMTP"} transaction on port ${port} within ${timeoutMs} ms`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, Math.min(left, 200));
        });
        wake = undefined;
      }
      return messages[taken++]!;
    },
    close() {
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
