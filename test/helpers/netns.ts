// Private test "hosts" in Linux network namespaces with their own DNS (dnsmasq), so that MX
// lookups and port-25/443/80 connections of the code under test go to throw-away peers and never
// leave the machine. Needs root, iproute2 (`ip`) and dnsmasq (package dnsmasq-base).
//
// Layout (one set per netnsUp call; names unique per test process, so parallel runs never clash):
//   <prefix>-sw    switch: bridge br0, one veth end per host
//   <prefix>-dns   dnsmasq on dnsIp (default 10.99.0.53): only the given records, never forwards
//   <prefix>-<h>   one per host {name, ip}: eth0 with ip/24, lo up, NO default route
// /etc/netns/<ns>/resolv.conf (nameserver dnsIp) and hosts are written for every namespace;
// `ip netns exec` bind-mounts them over /etc/resolv.conf and /etc/hosts for what runs inside,
// while the root namespace keeps its own.
//
//   const net = await netnsUp({ hosts: [{ name: "a", ip: "10.99.0.1" }], records: ["mx-host=b.test,mx.b.test,10", "host-record=mx.b.test,10.99.0.2"] });
//   await net.exec("a", ["getent", "hosts", "mx.b.test"]);
//   const p = net.spawn("a", ["/path/madmail", "serve", ...], { env, log: "/tmp/x/serve.log" });
//   await net.waitTcp("a", "10.99.0.1", 25);
//   await net.down();
// If down() is never reached (the test process is killed; `bun test` emits no "exit" event), a
// watchdog process started by netnsUp removes everything once the test process is gone, and the
// next netnsUp removes namespaces of dead test processes (mmt-<pid>-*) too.
// All hosts must be in one /24 (the switch is a plain bridge, there is no router).
//
// Also here: startPostfixIn(), a throw-away Postfix on <ip>:25 inside a namespace that stores mail
// for its domains in Maildirs (virtual(8)), built from the same templates as peers.ts' startPostfix
// (test/peers/postfix/*.cf.in), which can only listen on the root namespace's loopback.
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { mailOwner, run, userIds, type RunResult, pidsWithCwdUnder } from "./peers.ts";

const PATH = [process.env.PATH ?? "", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].filter(Boolean).join(":");
const ENV = { PATH, LANG: "C", LC_ALL: "C" };
const NAME_RE = /^[a-z0-9]{1,12}$/;
const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
/** Namespaces of this harness: mmt-<pid of the test process>-<n>-<host>. */
const NS_RE = /^mmt-(\d+)-\d+-[a-z0-9]+$/;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function which(name: string): string | null {
  return Bun.which(name, { PATH });
}

function ipBin(): string {
  const p = which("ip");
  if (!p) throw new Error("ip (iproute2) not found");
  return p;
}

function runSync(cmd: string[]): RunResult {
  const r = Bun.spawnSync(cmd, { env: ENV, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function must(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r;
}

// ---------------------------------------------------------------------------------------------
// availability

let availability: { ok: boolean; missing: string[] } | undefined;

/**
 * Whether namespaces can be used here: root, `ip` and `dnsmasq` installed, and a namespace can
 * actually be created and entered (not the case in unprivileged containers). Cached.
 * Use with `describe.skipIf(!haveNetns())`; netnsStatus().missing says why not.
 */
export function haveNetns(): boolean {
  return netnsStatus().ok;
}

export function netnsStatus(): { ok: boolean; missing: string[] } {
  if (availability) return availability;
  const missing: string[] = [];
  if (typeof process.getuid !== "function" || process.getuid() !== 0) missing.push("needs root");
  if (!which("ip")) missing.push("not installed: ip (iproute2)");
  if (!which("dnsmasq")) missing.push("not installed: dnsmasq (dnsmasq-base)");
  if (missing.length === 0) {
    const probe = `mmt-${process.pid}-0-probe`;
    const ip = ipBin();
    const add = runSync([ip, "netns", "add", probe]);
    if (add.code !== 0) missing.push(`ip netns add: ${add.stderr.trim()}`);
    else {
      const ex = runSync([ip, "netns", "exec", probe, "true"]);
      if (ex.code !== 0) missing.push(`ip netns exec: ${ex.stderr.trim()}`);
      runSync([ip, "netns", "del", probe]);
    }
  }
  availability = { ok: missing.length === 0, missing };
  return availability;
}

// ---------------------------------------------------------------------------------------------
// clean-up bookkeeping

const live = new Set<{ downSync(): void }>();
let hooksInstalled = false;

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const all = () => {
    for (const n of [...live]) {
      try {
        n.downSync();
      } catch {
        // best effort
      }
    }
  };
  process.once("exit", all);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      all();
      process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
    });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Running (not a zombie, not reaped). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function nsPids(ip: string, ns: string): number[] {
  const r = runSync([ip, "netns", "pids", ns]);
  if (r.code !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => p > 1 && p !== process.pid);
}

function killAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}

function removeNamespace(ip: string, ns: string): void {
  runSync([ip, "netns", "del", ns]);
  rmSync(join("/etc/netns", ns), { recursive: true, force: true });
}

/**
 * Removes namespaces (and their /etc/netns dirs, and the processes inside) left behind by test
 * processes of this harness that no longer run (killed with SIGKILL, machine crash of a CI step).
 */
export function reapStaleNamespaces(): string[] {
  const ip = ipBin();
  const list = runSync([ip, "netns", "list"]).stdout.split("\n").map((l) => l.trim().split(/\s+/)[0] ?? "").filter(Boolean);
  const gone: string[] = [];
  for (const ns of list) {
    const m = NS_RE.exec(ns);
    if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
    killAll(nsPids(ip, ns), "SIGKILL");
    removeNamespace(ip, ns);
    gone.push(ns);
  }
  return gone;
}

/** Start time of a process (field 22 of /proc/<pid>/stat), to tell it from a later one with the same PID. */
function startTime(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
}

const WATCHDOG = `
const fs = require("node:fs");
const cfg = JSON.parse(process.env.MMT_NETNS_WATCH);
const same = () => { try { const st = fs.readFileSync("/proc/" + cfg.pid + "/stat", "utf8"); const f = st.slice(st.lastIndexOf(")") + 2).split(" "); return f[0] !== "Z" && f[19] === cfg.start; } catch { return false; } };
while (same()) await Bun.sleep(500);
for (const ns of cfg.namespaces) {
  const r = Bun.spawnSync([cfg.ip, "netns", "pids", ns], { stderr: "ignore" });
  for (const p of r.stdout.toString().split(/\\s+/).filter(Boolean)) { try { process.kill(Number(p), "SIGKILL"); } catch {} }
}
for (const ns of cfg.namespaces) {
  Bun.spawnSync([cfg.ip, "netns", "del", ns], { stderr: "ignore" });
  fs.rmSync("/etc/netns/" + ns, { recursive: true, force: true });
}
try { fs.rmdirSync("/etc/netns"); } catch {}
let adopted = [];
try { adopted = JSON.parse(fs.readFileSync(cfg.dir + "/adopted.json", "utf8")); } catch {}
for (const p of adopted) fs.rmSync(p, { recursive: true, force: true });
fs.rmSync(cfg.dir, { recursive: true, force: true });
`;

function startWatchdog(ip: string, namespaces: string[], dir: string): Bun.Subprocess {
  const cfg = { pid: process.pid, start: startTime(process.pid), ip, namespaces, dir };
  const setsid = which("setsid");
  // setsid: not in our process group, so a Ctrl-C to the test run does not end it too.
  const proc = Bun.spawn([...(setsid ? [setsid] : []), process.execPath, "-e", WATCHDOG], {
    env: { ...ENV, MMT_NETNS_WATCH: JSON.stringify(cfg) },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  proc.unref();
  return proc;
}

// ---------------------------------------------------------------------------------------------
// netnsUp

export interface NetnsHost {
  /** Short name ([a-z0-9], up to 12 chars); the namespace is <prefix>-<name>. */
  name: string;
  /** IPv4 address in the /24 of the switch, e.g. 10.99.0.1. */
  ip: string;
}

export interface NetnsOptions {
  hosts: NetnsHost[];
  /** dnsmasq config lines, e.g. "mx-host=b.test,mx.b.test,10", "host-record=mx.b.test,10.99.0.2", "mx-host=null.test,.,0". */
  records: string[];
  /** Address of the DNS host (namespace <prefix>-dns); default: .53 of the hosts' /24. */
  dnsIp?: string;
  /** Domain dnsmasq answers authoritatively (NXDOMAIN for unknown names; other names get REFUSED). Default "test". */
  localDomain?: string;
}

export interface SpawnOpts {
  cwd?: string;
  /** The whole environment (PATH defaults to one with the sbin directories). */
  env?: Record<string, string | undefined>;
  /** Append stdout and stderr to this file (default: discarded). */
  log?: string;
  stdin?: string | Uint8Array;
}

export interface Netns {
  /** Prefix of every namespace name of this set, e.g. mmt-1234-1. */
  prefix: string;
  /** Scratch directory (dnsmasq.conf, dnsmasq.log); removed by down(). */
  dir: string;
  dnsIp: string;
  hosts: NetnsHost[];
  /** Full namespace name of a host (or "dns", "sw"). */
  ns(host: string): string;
  /** Runs a command to completion inside the host's namespace. */
  exec(host: string, cmd: string[], opts?: { stdin?: string | Uint8Array; env?: Record<string, string | undefined>; timeoutMs?: number }): Promise<RunResult>;
  /** Starts a long-running command inside the host's namespace (its PID is the command's: ip netns exec execs it). */
  spawn(host: string, cmd: string[], opts?: SpawnOpts): Bun.Subprocess;
  /** Waits until something accepts TCP connections on addr:port as seen from inside `host`. */
  waitTcp(host: string, addr: string, port: number, timeoutMs?: number): Promise<void>;
  /** dnsmasq's query log. */
  dnsLog(): string;
  /**
   * Hands a scratch path (instance directory, sandbox) to this set: removed by down() after the
   * processes inside have ended, or by the watchdog if the test process dies first.
   */
  adopt(path: string): void;
  /** Ends every process inside (SIGTERM, SIGKILL after graceMs), deletes the namespaces, /etc/netns/<ns>, dir and adopted paths. Idempotent. */
  down(graceMs?: number): Promise<void>;
}

let counter = 0;

/** Builds the namespaces, starts dnsmasq and waits until it answers. Tears everything down again if any step fails. */
export async function netnsUp(opts: NetnsOptions): Promise<Netns> {
  const ip = ipBin();
  const dnsmasq = which("dnsmasq");
  if (!dnsmasq) throw new Error("dnsmasq not found (apt-get install dnsmasq-base)");
  installHooks();
  reapStaleNamespaces();

  const prefix = `mmt-${process.pid}-${++counter}`;
  const names = new Set<string>();
  for (const h of opts.hosts) {
    if (!NAME_RE.test(h.name) || h.name === "sw" || h.name === "dns") throw new Error(`bad host name "${h.name}": [a-z0-9]{1,12}, not sw/dns`);
    if (names.has(h.name)) throw new Error(`host ${h.name} given twice`);
    names.add(h.name);
    if (!IPV4_RE.test(h.ip)) throw new Error(`bad IPv4 address ${h.ip} for ${h.name}`);
  }
  for (const r of opts.records) if (/[\r\n]/.test(r) || !/^[a-z-]+=/.test(r)) throw new Error(`bad dnsmasq record line: ${JSON.stringify(r)}`);
  const base = (opts.hosts[0]?.ip ?? "10.99.0.1").split(".").slice(0, 3).join(".");
  const dnsIp = opts.dnsIp ?? `${base}.53`;
  if (opts.hosts.some((h) => h.ip === dnsIp)) throw new Error(`${dnsIp} is the DNS host's address`);
  const localDomain = opts.localDomain ?? "test";

  const nsName = (host: string) => `${prefix}-${host}`;
  const sw = nsName("sw");
  const all = [{ name: "dns", ip: dnsIp }, ...opts.hosts];
  const created: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), "mm-netns-"));
  chmodSync(dir, 0o755);
  const procs: Bun.Subprocess[] = [];
  const adopted: string[] = [];
  let isDown = false;

  // Our spawned processes that still run (exitCode is null until Bun has seen the exit; the
  // /proc check covers the gap after the kernel reaped it), never a PID reused by someone else.
  const ours = () => procs.filter((p) => p.exitCode === null && running(p.pid)).map((p) => p.pid);
  const downSync = () => {
    if (isDown) return;
    isDown = true;
    live.delete(handle);
    killAll(ours(), "SIGKILL");
    for (const ns of created) killAll(nsPids(ip, ns), "SIGKILL");
    for (const ns of created.reverse()) removeNamespace(ip, ns);
    if (watchdog.exitCode === null) watchdog.kill("SIGKILL");
    for (const p of adopted) rmSync(p, { recursive: true, force: true });
    try {
      rmdirSync("/etc/netns"); // only when empty: another run may still use it
    } catch {
      // not empty, or gone
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const handle = { downSync };
  live.add(handle);
  // `bun test` emits no "exit" event, and a killed test process runs no hook at all: a watchdog in
  // its own session removes everything once this process is gone. down() ends it.
  const watchdog = startWatchdog(ip, [sw, ...all.map((h) => nsName(h.name))], dir);

  const ipc = async (...args: string[]) => must(await run([ip, ...args]), `ip ${args.join(" ")}`);
  const nsArgv = (host: string, cmd: string[]) => {
    if (host !== "dns" && host !== "sw" && !names.has(host)) throw new Error(`no host ${host} in this namespace set`);
    return [ip, "netns", "exec", nsName(host), ...cmd];
  };

  const net: Netns = {
    prefix,
    dir,
    dnsIp,
    hosts: opts.hosts,
    ns: nsName,
    exec(host, cmd, o = {}) {
      return run(nsArgv(host, cmd), { stdin: o.stdin, timeoutMs: o.timeoutMs ?? 60_000, env: { ...ENV, ...o.env } });
    },
    spawn(host, cmd, o = {}) {
      // One descriptor in append mode for both streams, so their lines interleave instead of overwriting.
      const fd = o.log ? openSync(o.log, "a") : undefined;
      try {
        const proc = Bun.spawn(nsArgv(host, cmd), {
          cwd: o.cwd,
          env: { ...ENV, ...o.env },
          stdin: o.stdin === undefined ? "ignore" : new Blob([typeof o.stdin === "string" ? o.stdin : new Uint8Array(o.stdin)]),
          stdout: fd ?? "ignore",
          stderr: fd ?? "ignore",
        });
        procs.push(proc);
        return proc;
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    },
    async waitTcp(host, addr, port, timeoutMs = 10_000) {
      // One short-lived Bun inside the namespace polls until the port answers (no bash/nc needed).
      const script = `
        const net = require("node:net");
        const end = Date.now() + ${timeoutMs};
        const once = () => new Promise((res) => { const s = net.connect(${port}, ${JSON.stringify(addr)}); s.once("connect", () => { s.destroy(); res(true); }); s.once("error", () => res(false)); });
        for (;;) { if (await once()) process.exit(0); if (Date.now() > end) process.exit(1); await Bun.sleep(50); }`;
      const r = await run(nsArgv(host, [process.execPath, "-e", script]), { timeoutMs: timeoutMs + 5_000, env: ENV });
      if (r.code !== 0) throw new Error(`nothing accepts connections on ${addr}:${port} (seen from ${host}) after ${timeoutMs} ms ${r.stderr}`);
    },
    adopt(path) {
      const p = resolve(path);
      if (p === "/" || !p.startsWith(tmpdir() + "/")) throw new Error(`adopt: only paths below ${tmpdir()}, not ${p}`);
      adopted.push(p);
      writeFileSync(join(dir, "adopted.json"), JSON.stringify(adopted));
    },
    dnsLog() {
      const f = join(dir, "dnsmasq.log");
      return existsSync(f) ? readFileSync(f, "utf8") : "";
    },
    async down(graceMs = 3_000) {
      if (isDown) return;
      const pids = () => [...new Set([...created.flatMap((ns) => nsPids(ip, ns)), ...ours()])].filter(running);
      killAll(pids(), "SIGTERM");
      const end = Date.now() + graceMs;
      while (pids().length && Date.now() < end) await sleep(50);
      downSync();
      // Let Bun collect its children's exit status (no zombies left behind).
      await Promise.race([Promise.all(procs.map((p) => p.exited)), sleep(1_000)]);
    },
  };

  try {
    await ipc("netns", "add", sw);
    created.push(sw);
    await ipc("-n", sw, "link", "set", "lo", "up");
    await ipc("-n", sw, "link", "add", "br0", "type", "bridge");
    await ipc("-n", sw, "link", "set", "br0", "up");
    let i = 0;
    for (const h of all) {
      const ns = nsName(h.name);
      const port = `p${++i}`;
      await ipc("netns", "add", ns);
      created.push(ns);
      await ipc("-n", ns, "link", "set", "lo", "up");
      // Both ends are created directly in their namespaces: no interface name in the root
      // namespace, so parallel runs cannot collide there.
      await ipc("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", sw);
      await ipc("-n", ns, "addr", "add", `${h.ip}/24`, "dev", "eth0");
      await ipc("-n", ns, "link", "set", "eth0", "up");
      await ipc("-n", sw, "link", "set", port, "master", "br0");
      await ipc("-n", sw, "link", "set", port, "up");
      const etc = join("/etc/netns", ns);
      mkdirSync(etc, { recursive: true });
      writeFileSync(join(etc, "resolv.conf"), `nameserver ${dnsIp}\noptions timeout:2 attempts:2\n`);
      writeFileSync(join(etc, "hosts"), `127.0.0.1 localhost\n${h.ip} ${h.name}\n`);
    }

    const conf = [
      "# written by test/helpers/netns.ts: answers only from this file, never forwards",
      "no-resolv",
      "no-hosts",
      "no-poll",
      `listen-address=${dnsIp}`,
      "bind-interfaces",
      "port=53",
      "user=nobody",
      `pid-file=${join(dir, "dnsmasq.pid")}`,
      `log-facility=${join(dir, "dnsmasq.log")}`,
      "log-queries",
      `local=/${localDomain}/`,
      ...opts.records,
      "",
    ].join("\n");
    writeFileSync(join(dir, "dnsmasq.conf"), conf);
    // -k: stay in the foreground, so the spawned PID is dnsmasq's; --conf-file: nothing from /etc/dnsmasq*.
    net.spawn("dns", [dnsmasq, "-k", `--conf-file=${join(dir, "dnsmasq.conf")}`], { log: join(dir, "dnsmasq.stderr") });

    // Ready when a query from a host namespace (through its resolv.conf) gets any DNS answer.
    const asker = opts.hosts[0]?.name ?? "dns";
    const script = `
      const dns = require("node:dns").promises;
      const end = Date.now() + 10000;
      for (;;) {
        try { await dns.resolve4("netns-probe.${localDomain}"); process.exit(0); }
        catch (e) { if (e.code === "ENOTFOUND" || e.code === "ENODATA") process.exit(0); if (Date.now() > end) { console.error(e.code, e.message); process.exit(1); } }
        await Bun.sleep(50);
      }`;
    const r = await run(nsArgv(asker, [process.execPath, "-e", script]), { timeoutMs: 20_000, env: ENV });
    if (r.code !== 0) {
      const err = existsSync(join(dir, "dnsmasq.stderr")) ? readFileSync(join(dir, "dnsmasq.stderr"), "utf8") : "";
      throw new Error(`dnsmasq does not answer on ${dnsIp}: ${r.stderr}${r.stdout}\n${err}\n${net.dnsLog()}`);
    }
  } catch (e) {
    await net.down(500).catch(() => downSync());
    throw e;
  }
  return net;
}

// ---------------------------------------------------------------------------------------------
// Postfix inside a namespace, final destination for some domains (virtual(8) Maildirs)

export interface NsPostfixOptions {
  /** Instance directory (peerDir(): short, mode 0755); gets etc/, spool/, data/, mail/, maillog. */
  dir: string;
  /** Host of the namespace set; smtpd listens on <its ip>:port. */
  host: string;
  port?: number;
  /** myhostname, e.g. mx.b.test. */
  hostname: string;
  /** Domains whose mail is stored here. */
  domains: string[];
  /** Addresses with a mailbox (<dir>/mail/<domain>/<local>/); others are refused at RCPT (550). */
  mailboxes: string[];
  /** Offer STARTTLS with this certificate. */
  tls?: { cert: string; key: string };
  /** More main.cf settings (replace in place or appended). */
  extra?: Record<string, string>;
}

export interface NsPostfix {
  dir: string;
  configDir: string;
  /** The maillog ("" before anything was logged). */
  logs(): string;
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Files in new/ of an address's Maildir, full paths. */
  mailbox(address: string): string[];
  stop(): Promise<void>;
}

const TEMPLATES = resolve(import.meta.dir, "../peers/postfix");

function renderTemplate(file: string, vars: Record<string, string>): string {
  return readFileSync(join(TEMPLATES, file), "utf8").replace(/@([A-Z_]+)@/g, (_m, k: string) => {
    const v = vars[k];
    if (v === undefined) throw new Error(`${file}: no value for @${k}@`);
    return v;
  });
}

function setMainCf(text: string, settings: Record<string, string>): string {
  const left = new Map(Object.entries(settings));
  for (const [k, v] of left) if (!/^[a-z0-9_]+$/.test(k) || /[\r\n]/.test(v)) throw new Error(`bad main.cf setting ${k}`);
  const lines = text.split("\n").map((line) => {
    const key = /^([a-z0-9_]+)\s*=/.exec(line)?.[1];
    if (key === undefined || !left.has(key)) return line;
    const v = left.get(key)!;
    left.delete(key);
    return `${key} = ${v}`;
  });
  for (const [k, v] of left) lines.push(`${k} = ${v}`);
  return lines.join("\n") + "\n";
}

/** Starts Postfix on <host ip>:port inside the host's namespace (needs root); mail for `domains` lands in Maildirs. */
export async function startPostfixIn(net: Netns, opts: NsPostfixOptions): Promise<NsPostfix> {
  const postfix = which("postfix");
  if (!postfix) throw new Error("postfix not found (.ci/install-peers.sh)");
  const host = net.hosts.find((h) => h.name === opts.host);
  if (!host) throw new Error(`no host ${opts.host}`);
  const port = opts.port ?? 25;
  const dir = resolve(opts.dir);
  const configDir = join(dir, "etc");
  const spool = join(dir, "spool");
  const data = join(dir, "data");
  const mail = join(dir, "mail");
  const maillog = join(dir, "maillog");
  for (const d of [dir, configDir, spool, data, mail]) mkdirSync(d, { recursive: true });
  chmodSync(dir, 0o755);
  chownSync(spool, 0, 0);
  const pf = userIds("postfix");
  chownSync(data, pf.uid, pf.gid);
  chmodSync(data, 0o700);
  const owner = mailOwner();
  chownSync(mail, owner.uid, owner.gid);

  const vmailbox = opts.mailboxes.map((a) => {
    const at = a.lastIndexOf("@");
    if (at < 1 || /[\s/]/.test(a)) throw new Error(`bad mailbox address ${a}`);
    return `${a}\t${a.slice(at + 1)}/${a.slice(0, at)}/`;
  });
  writeFileSync(join(configDir, "vmailbox"), vmailbox.join("\n") + "\n");

  const main = renderTemplate("main.cf.in", {
    DIR: dir,
    HOSTNAME: opts.hostname,
    RELAYHOST: "",
    RELAY_RESTRICTIONS: "reject_unauth_destination",
    DEFAULT_TRANSPORT: "error:this test instance only takes mail for its own domains",
    SMTPD_TLS_LEVEL: opts.tls ? "may" : "none",
    TLS_CERT: opts.tls?.cert ?? "",
    TLS_KEY: opts.tls?.key ?? "",
  });
  writeFileSync(
    join(configDir, "main.cf"),
    setMainCf(main, {
      inet_interfaces: host.ip,
      relay_domains: "",
      transport_maps: "",
      virtual_mailbox_domains: opts.domains.join(", "),
      virtual_mailbox_base: mail,
      virtual_mailbox_maps: `texthash:${join(configDir, "vmailbox")}`,
      virtual_uid_maps: `static:${owner.uid}`,
      virtual_gid_maps: `static:${owner.gid}`,
      virtual_transport: "virtual",
      // the template's message_size_limit is 50 MB; virtual(8) refuses to start with a smaller limit
      virtual_mailbox_limit: "0",
      ...opts.extra,
    }),
  );
  const master = renderTemplate("master.cf.in", { SMTP_LISTEN: `${host.ip}:${port}` }) +
    "\n# --- added by test/helpers/netns.ts: final delivery into Maildirs ---\nvirtual     unix  -       n       n       -       -       virtual\n";
  writeFileSync(join(configDir, "master.cf"), master);
  // Postfix waits ~2 s for config files younger than that to become "stable": back-date them.
  const past = new Date(Date.now() - 60_000);
  for (const f of readdirSync(configDir)) utimesSync(join(configDir, f), past, past);

  const logs = () => (existsSync(maillog) ? readFileSync(maillog, "utf8") : "");
  // `postfix check` fails silently unless inet_interfaces is an address of the current namespace.
  const start = await net.exec(opts.host, [postfix, "-c", configDir, "start"], { timeoutMs: 30_000 });
  if (start.code !== 0) throw new Error(`postfix start in ${opts.host} failed (${start.code}): ${start.stderr}${start.stdout}\n${logs()}`);

  let stopped = false;
  const instance: NsPostfix = {
    dir,
    configDir,
    logs,
    async waitForLog(pattern, timeoutMs = 15_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const line = logs().split("\n").find((l) => pattern.test(l));
        if (line) return line;
        if (Date.now() > end) throw new Error(`no maillog line ${pattern} after ${timeoutMs} ms\n--- ${maillog} ---\n${logs()}`);
        await sleep(100);
      }
    },
    mailbox(address) {
      const at = address.lastIndexOf("@");
      const d = join(mail, address.slice(at + 1), address.slice(0, at), "new");
      return existsSync(d) ? readdirSync(d).map((f) => join(d, f)) : [];
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await net.exec(opts.host, [postfix, "-c", configDir, "stop"], { timeoutMs: 30_000 }).catch(() => undefined);
      const end = Date.now() + 5_000;
      while (pidsWithCwdUnder(spool).length && Date.now() < end) await sleep(50);
      killAll(pidsWithCwdUnder(spool), "SIGKILL");
    },
  };
  try {
    await net.waitTcp(opts.host, host.ip, port);
  } catch (e) {
    await instance.stop();
    throw new Error(`${(e as Error).message}\n${logs()}`);
  }
  return instance;
}
