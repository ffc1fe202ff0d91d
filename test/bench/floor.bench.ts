// Floor benchmark: the lowest CPU cost per message of the parts of a durable relay that cannot be
// avoided (not a test: bun test ignores *.bench.ts). No madmail code runs here: stripped-down
// stand-ins show what the relay (relay.bench.ts: A signs with DKIM and POSTs /mxdeliv, B stores in
// a Maildir with fsync) could cost at best on this machine, against a CPU budget per message.
//
//   ./node_modules/.bin/bun test/bench/floor.bench.ts [--signs 1000] [--files 3000] [--requests 5000]
//       [--clients 20] [--quiet-wait 30] [--no-results]
//
// 1. RSA-2048 PKCS#1 v1.5 SHA-256 signatures of a 600-byte input (what DKIM signs): node:crypto sign()
//    with a cached KeyObject, WebCrypto (madmail's fallback when libcrypto.so.3 is missing) one at a time and 20 in flight (it runs
//    on a thread pool), Ed25519 for comparison, `openssl speed -seconds 2 rsa2048` for what the system
//    OpenSSL costs (madmail signs with it through bun:ffi when it can: src/delivery/rsa-sign.ts).
// 2. Durable Maildir write: open tmp/NAME "wx" 0600, write 1.5 KB, fsync, close, rename to new/,
//    fsync new/ (async: one directory fsync in flight, renames meanwhile wait for the next one and
//    share it); node:fs promises at concurrency 1 and CLIENTS, and all-synchronous at concurrency 1.
// 3. HTTP receiver: a child process (Bun.serve on 127.0.0.1, an inline script in the temp dir) that
//    answers POST /mxdeliv after the async write of part 2 (the same function), and without it;
//    CLIENTS keep-alive fetch() clients here, 1 KB and 4 KB bodies. Receiver CPU from /proc/PID/stat.
// CPU is user and sys of the measured process (process.cpuUsage(), or /proc for the child); what
// kernel threads did meanwhile (kworkers, jbd2) is counted separately, and the whole machine's busy
// CPU (also irq/softirq work, and other users' load: the machine is shared) is shown for reference.
// The relay's measured CPU per message is read from RESULTS.md. Prints a markdown report and writes
// it into test/bench/RESULTS.md between the floor.bench.ts markers (--no-results skips that).
import { generateKeyPairSync, sign } from "node:crypto";
import { closeSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, promises as fsp, readdirSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../helpers/peers.ts";
import {
  RESULTS, countFiles, createCleanup, dieWith, finish, fmtDec, fmtInt, loadText, machineBusy, machineLine, problemsBlock, procOwnCpu,
  readProc, requirePositiveIntegers, sh, tempDirFilesystem, waitPort, waitQuiet,
} from "./_lib.ts";

const { values } = parseArgs({
  options: {
    signs: { type: "string", default: "1000" },
    files: { type: "string", default: "3000" },
    requests: { type: "string", default: "5000" },
    clients: { type: "string", default: "20" },
    "quiet-wait": { type: "string", default: "30" },
    "no-results": { type: "boolean", default: false },
  },
});
const opts = { signs: Number(values.signs), files: Number(values.files), requests: Number(values.requests), clients: Number(values.clients), "quiet-wait": Number(values["quiet-wait"]) };
requirePositiveIntegers(opts, dieWith("floor.bench"));
const { signs: SIGNS, files: FILES, requests: REQUESTS, clients: CLIENTS, "quiet-wait": QUIET_WAIT } = opts;
const COMMAND = ["./node_modules/.bin/bun", "test/bench/floor.bench.ts", ...process.argv.slice(2)].join(" ");
const NPROC = Number(sh(["nproc"])) || 2;
const SIZES = [1024, 4096] as const;
const FILE_SIZE = 1536;
const WARMUP = 200;
/** the issue's Postfix -> smtp-sink rate (1 KB, 20 sessions) when RESULTS.md has none */
const POSTFIX_DEFAULT = 740;

/** Seconds: user/sys of the measured process (this one; the receiver child in `peer`), kernel threads', the machine's busy CPU. */
interface Row { label: string; n: number; wallS: number; user: number; sys: number; kthreads: number; busy: number; peer?: { user: number; sys: number }; note?: string }
const rows: Record<"sign" | "fs" | "http", Row[]> = { sign: [], fs: [], http: [] };
const partLoad: string[] = [];
const problems: string[] = [];
const startedAt = new Date();
const { tempDirs, cleanup, track } = createCleanup();

/** Runs fn: its wall time, this process's CPU (all threads: WebCrypto's and fs's pools count), kernel threads', the machine's. */
async function timed(label: string, n: number, fn: () => unknown): Promise<Row> {
  const k0 = kthreadCpu();
  const c0 = process.cpuUsage();
  const b0 = machineBusy();
  const t0 = performance.now();
  await fn();
  const wallS = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const busy = machineBusy() - b0;
  return { label, n, wallS, user: c.user / 1e6, sys: c.system / 1e6, kthreads: kthreadCpu() - k0, busy };
}

/** CPU seconds of all kernel threads so far: fsync's journal commits and I/O run there, not in the caller. */
function kthreadCpu(): number {
  let sum = 0;
  for (const p of readdirSync("/proc")) {
    const r = /^\d+$/.test(p) ? readProc(Number(p)) : undefined;
    if (r?.kthread) sum += r.own;
  }
  return sum;
}

/** n calls of fn(i), at most c in flight. */
async function pool(n: number, c: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, c) }, async () => { while (next < n) await fn(next++); }));
}

async function quiet(part: string): Promise<void> {
  const busy = await waitQuiet({ maxS: QUIET_WAIT, cores: 0.3 });
  partLoad.push(`${part} ${loadText()} (busy cores ${fmtDec(busy)})`);
  console.log(`# ${part}: loadavg ${loadText()}`);
}

/**
 * Durable async Maildir delivery. The receiver child runs this very function (its source, via
 * toString), so that parts 2 and 3 write the same way: it must not use anything from this module.
 */
async function makeMaildir(f: typeof fsp, root: string) {
  for (const d of ["tmp", "new", "cur"]) await f.mkdir(`${root}/${d}`, { recursive: true, mode: 0o700 });
  const dirH = await f.open(`${root}/new`, "r"); // kept open: the floor does not reopen new/ per fsync
  let q = 0;
  let dirSyncs = 0;
  let running: Promise<void> | undefined;
  let pending: Promise<void> | undefined;
  const syncNow = () => {
    dirSyncs++;
    running = dirH.sync().finally(() => { running = undefined; });
    return running;
  };
  // a running fsync of new/ may have started before our rename: wait for the next, shared by all who wait
  const syncNew = (): Promise<void> => {
    if (!running) return syncNow();
    pending ??= running.then(() => { pending = undefined; return syncNow(); });
    return pending;
  };
  const deliver = async (body: Uint8Array) => {
    const name = `${Date.now()}.P${process.pid}Q${++q}.floor`;
    const tmp = `${root}/tmp/${name}`;
    const h = await f.open(tmp, "wx", 0o600);
    try {
      await h.write(body, 0, body.byteLength, 0);
      await h.sync();
    } finally {
      await h.close();
    }
    await f.rename(tmp, `${root}/new/${name}`);
    await syncNew();
  };
  return { deliver, dirSyncs: () => dirSyncs, close: () => dirH.close() };
}

/** The same steps with the synchronous calls, one file at a time (one fsync of new/ per file). */
function syncMaildir(root: string, n: number, body: Uint8Array): void {
  for (const d of ["tmp", "new", "cur"]) mkdirSync(join(root, d), { recursive: true, mode: 0o700 });
  const dfd = openSync(join(root, "new"), "r");
  for (let i = 0; i < n; i++) {
    const name = `${Date.now()}.P${process.pid}S${i}.floor`;
    const fd = openSync(join(root, "tmp", name), "wx", 0o600);
    writeSync(fd, body);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(join(root, "tmp", name), join(root, "new", name));
    fsyncSync(dfd);
  }
  closeSync(dfd);
}

const receiverScript = () => `import { promises as fsp } from "node:fs";
const makeMaildir = ${makeMaildir.toString()};
const [port, root, mode] = process.argv.slice(2);
const md = mode === "write" ? await makeMaildir(fsp, root) : undefined;
Bun.serve({ hostname: "127.0.0.1", port: Number(port), async fetch(req) {
  if (req.method !== "POST" || !req.url.endsWith("/mxdeliv")) return new Response("not found", { status: 404 });
  const body = new Uint8Array(await req.arrayBuffer());
  if (md) await md.deliver(body);
  return new Response("ok");
} });
`;

/** DKIM's signed data: the canonicalised headers plus the DKIM-Signature header without b= (~600 bytes). */
const DKIM_INPUT = Buffer.from(
  ["from:<alice@a.test>", "to:<bob@b.test>", "subject:[...]", "date:Sat, 21 Nov 2026 12:00:00 +0000", "message-id:<0123456789abcdefghjkmnpq@a.test>",
    "mime-version:1.0", 'content-type:multipart/encrypted; protocol="application/pgp-encrypted"; boundary="=-=mm-relay-bench-boundary=-="',
    "dkim-signature:v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=default; t=1795780800; h=from:to:subject:date:message-id:mime-version:content-type:chat-version; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b="].join("\r\n").padEnd(600, " "),
);

async function partSign(): Promise<void> {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const ed = generateKeyPairSync("ed25519").privateKey;
  const alg = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  const wc = await crypto.subtle.importKey("pkcs8", privateKey.export({ format: "der", type: "pkcs8" }), alg, false, ["sign"]);
  // PKCS#1 v1.5 is deterministic: both APIs must give the same bytes
  const a = sign("sha256", DKIM_INPUT, privateKey);
  const b = Buffer.from(await crypto.subtle.sign(alg, wc, DKIM_INPUT));
  if (!a.equals(b)) problems.push("node:crypto and WebCrypto RSA signatures differ");
  for (let i = 0; i < 20; i++) await Promise.all([sign("sha256", DKIM_INPUT, privateKey), sign(null, DKIM_INPUT, ed), crypto.subtle.sign(alg, wc, DKIM_INPUT)]);
  const s = rows.sign;
  s.push(await timed("RSA-2048 node:crypto sign(), cached KeyObject, one at a time", SIGNS, () => { for (let i = 0; i < SIGNS; i++) sign("sha256", DKIM_INPUT, privateKey); }));
  s.push(await timed("RSA-2048 WebCrypto subtle.sign, one at a time", SIGNS, async () => { for (let i = 0; i < SIGNS; i++) await crypto.subtle.sign(alg, wc, DKIM_INPUT); }));
  s.push(await timed(`RSA-2048 WebCrypto subtle.sign, ${CLIENTS} in flight (thread pool)`, 2 * SIGNS, () => pool(2 * SIGNS, CLIENTS, () => crypto.subtle.sign(alg, wc, DKIM_INPUT))));
  s.push(await timed("Ed25519 node:crypto sign() (comparison)", 5 * SIGNS, () => { for (let i = 0; i < 5 * SIGNS; i++) sign(null, DKIM_INPUT, ed); }));
  // openssl is single-threaded and CPU-bound: 1 ÷ sign/s is its CPU per signature
  const m = /rsa\s+2048 bits\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)/.exec(sh(["openssl", "speed", "-seconds", "2", "rsa2048"]));
  const perS = Number(m?.[1]);
  s.push({ label: `\`openssl speed -seconds 2 rsa2048\` (${sh(["openssl", "version"]).split(" ").slice(0, 2).join(" ") || "not installed"}; reference)`, n: 2 * perS, wallS: 2, user: NaN, sys: NaN, kthreads: NaN, busy: NaN, note: m ? `≈ ${fmtDec(1000 / perS, 3)} ms per sign (1 ÷ sign/s)` : "no result" });
}

async function partFs(work: string): Promise<void> {
  const body = new Uint8Array(FILE_SIZE).fill(0x61);
  // bare creates: on an ext4 without journal they slow down for ~5 min after mass deletions (the inode
  // allocator skips inodes deleted recently: recently_deleted() in ialloc.c); that shows in every row
  mkdirSync(join(work, "fs-probe"));
  rows.fs.push(await timed("bare creates (openSync wx + closeSync; no write, no fsync, no rename)", FILES, () => { for (let i = 0; i < FILES; i++) closeSync(openSync(join(work, "fs-probe", `p${i}`), "wx", 0o600)); }));
  for (const c of [1, CLIENTS]) {
    const md = await makeMaildir(fsp, join(work, `fs-async-${c}`));
    const row = await timed(`node:fs promises, concurrency ${c}`, FILES, () => pool(FILES, c, () => md.deliver(body)));
    row.note = `${fmtInt(md.dirSyncs())} fsyncs of new/`;
    await md.close();
    rows.fs.push(row);
  }
  const row = await timed("synchronous fs calls (openSync … fsyncSync), concurrency 1", FILES, () => syncMaildir(join(work, "fs-sync"), FILES, body));
  row.note = `${fmtInt(FILES)} fsyncs of new/`;
  rows.fs.push(row);
  for (const d of ["fs-async-1", `fs-async-${CLIENTS}`, "fs-sync"]) {
    if (countFiles(join(work, d, "new")) !== FILES) problems.push(`${d}: ${countFiles(join(work, d, "new"))} of ${FILES} files in new/`);
  }
}

async function partHttp(work: string): Promise<void> {
  const script = join(work, "receiver.ts");
  writeFileSync(script, receiverScript());
  for (const mode of ["write", "nowrite"] as const) {
    const root = join(work, `http-${mode}`);
    const port = await freePort();
    const proc = Bun.spawn([process.execPath, script, String(port), root, mode], { stdout: "ignore", stderr: "inherit" });
    const stop = track(`receiver-${mode}`, proc, 5000);
    try {
      await waitPort(port, { timeoutMs: 10_000, alive: () => proc.exitCode === null, what: `receiver (${mode})` });
      const url = `http://127.0.0.1:${port}/mxdeliv`;
      for (const size of SIZES) {
        const body = new Uint8Array(size).fill(0x61);
        let bad = 0;
        const post = async () => {
          const r = await fetch(url, { method: "POST", body, headers: { "content-type": "message/rfc822" } });
          await r.arrayBuffer();
          if (r.status !== 200) bad++;
        };
        await pool(WARMUP, CLIENTS, post);
        const p0 = procOwnCpu(proc.pid);
        const row = await timed(mode === "write" ? "POST /mxdeliv → durable Maildir write (async, part 2)" : "POST /mxdeliv, body read, no write", REQUESTS, () => pool(REQUESTS, CLIENTS, post));
        const p1 = procOwnCpu(proc.pid);
        row.peer = { user: p1.user - p0.user, sys: p1.sys - p0.sys };
        row.note = `${size} B`;
        rows.http.push(row);
        if (bad) problems.push(`${mode} ${size} B: ${bad} answers other than 200`);
      }
      const files = countFiles(join(root, "new"));
      if (mode === "write" && files !== SIZES.length * (WARMUP + REQUESTS)) problems.push(`receiver: ${files} of ${SIZES.length * (WARMUP + REQUESTS)} files in new/`);
    } finally {
      await stop();
    }
  }
}

/** The relay's latest measured CPU per message (1 KB) and the Postfix -> smtp-sink rate, from RESULTS.md. */
function relayNumbers(): { date?: string; a?: number; b?: number; gen?: number; rate?: number; postfix?: number } {
  const text = existsSync(RESULTS) ? readFileSync(RESULTS, "utf8") : "";
  const sec = text.slice(text.indexOf("<!-- BEGIN relay.bench.ts"), text.indexOf("<!-- END relay.bench.ts"));
  const mm = /^\| madmail A → POST \/mxdeliv → madmail B[^|]*\| 1024 B \|[^|]*\|\s*([\d,]+)\s*\|[^|]*\|\s*A ([\d.]+), B ([\d.]+)\s*\|\s*([\d.]+)\s*\|/m.exec(sec);
  const pf = /^\| Postfix → smtp-sink \(same load generator\)[^|]*\| 1024 B \|[^|]*\|\s*([\d,]+)\s*\|/m.exec(sec);
  const num = (s?: string) => (s ? Number(s.replace(/,/g, "")) : undefined);
  return { date: /^Date: (\S+)/m.exec(sec)?.[1], rate: num(mm?.[1]), a: num(mm?.[2]), b: num(mm?.[3]), gen: num(mm?.[4]), postfix: num(pf?.[1]) };
}

// ---------------------------------------------------------------------------------------------
// main

let exitCode = 0;
const work = mkdtempSync(join(tmpdir(), "mm-floor-bench-"));
tempDirs.push(work);
const fsLine = sh(["findmnt", "-n", "-o", "TARGET,FSTYPE,SOURCE,OPTIONS", "-T", work]) || sh(["df", "-T", work]);
// fsync costs differ a lot with and without an ext4 journal ("<none>": no jbd2 commits)
const journalFile = `/sys/fs/ext4/${basename(fsLine.split(/\s+/)[2] ?? "?")}/journal_task`;
const journal = existsSync(journalFile) ? readFileSync(journalFile, "utf8").trim() : "";
console.log(`# temp dir ${work} on: ${fsLine}`);
try {
  await quiet("signatures");
  await partSign();
  await quiet("durable write");
  await partFs(work);
  await quiet("HTTP receiver");
  await partHttp(work);
} catch (e) {
  problems.push(`aborted: ${(e as Error).stack ?? e}`);
  exitCode = 1;
} finally {
  await cleanup();
}

const ms = (s: number, n: number) => fmtDec((1000 * s) / n, 3);
function report(): string {
  const out: string[] = [];
  out.push(`Date: ${startedAt.toISOString()}  `);
  out.push(`Command: \`${COMMAND}\` (from the repository root)  `);
  out.push(`Machine: ${machineLine(tempDirFilesystem())}  `);
  out.push(`Temp dir filesystem (findmnt -T): \`${fsLine}\`${journal ? `; ext4 journal task: ${journal === "<none>" ? "none (no journal)" : journal}` : ""}; bun ${Bun.version}  `);
  out.push(`Load average (1/5/15 min) before each part, after waiting up to ${QUIET_WAIT} s for < 0.3 busy cores: ${partLoad.join("; ")}  `);
  out.push("CPU ms per operation: user and sys of the measured process(es); kernel threads = CPU of kernel threads (kworkers; jbd2 on a journalled fs) in the same time ÷ n; machine busy = busy CPU of the whole machine in the same time ÷ n (includes both, irq/softirq work, and other users' load).");
  out.push("");
  out.push("### 1. Signatures (600-byte input)");
  out.push("");
  out.push("| operation | n | ops/s (wall) | user ms/op | sys ms/op | CPU ms/op | machine busy ms/op | |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
  for (const r of rows.sign) out.push(`| ${r.label} | ${fmtInt(r.n)} | ${fmtInt(r.n / r.wallS)} | ${ms(r.user, r.n)} | ${ms(r.sys, r.n)} | **${ms(r.user + r.sys, r.n)}** | ${ms(r.busy, r.n)} | ${r.note ?? ""} |`);
  out.push("");
  out.push(`### 2. Durable Maildir write (${FILE_SIZE} B, ${fmtInt(FILES)} files each: open wx, write, fsync, close, rename, fsync new/)`);
  out.push("");
  out.push("| variant | files/s (wall) | user ms/file | sys ms/file | CPU ms/file | kernel threads ms/file | machine busy ms/file | |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
  for (const r of rows.fs) out.push(`| ${r.label} | ${fmtInt(r.n / r.wallS)} | ${ms(r.user, r.n)} | ${ms(r.sys, r.n)} | **${ms(r.user + r.sys, r.n)}** | ${ms(r.kthreads, r.n)} | ${ms(r.busy, r.n)} | ${r.note ?? ""} |`);
  out.push("");
  out.push(`### 3. Minimal HTTP receiver (Bun.serve child; ${CLIENTS} keep-alive fetch() clients; ${fmtInt(REQUESTS)} requests per row after ${WARMUP} unmeasured)`);
  out.push("");
  out.push("| receiver | body | req/s (wall) | receiver user ms/msg | receiver sys ms/msg | client user ms/msg | client sys ms/msg | receiver + client CPU ms/msg | kernel threads ms/msg | machine busy ms/msg |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows.http) {
    const p = r.peer!;
    out.push(`| ${r.label} | ${r.note} | ${fmtInt(r.n / r.wallS)} | ${ms(p.user, r.n)} | ${ms(p.sys, r.n)} | ${ms(r.user, r.n)} | ${ms(r.sys, r.n)} | **${ms(p.user + p.sys + r.user + r.sys, r.n)}** | ${ms(r.kthreads, r.n)} | ${ms(r.busy, r.n)} |`);
  }
  out.push("");
  const rel = relayNumbers();
  const pfRate = rel.postfix ?? POSTFIX_DEFAULT;
  const budget = (1000 * NPROC) / (2 * pfRate);
  if (rel.a !== undefined && rel.b !== undefined && rel.gen !== undefined) {
    out.push(`### 4. The relay as measured (relay.bench.ts section of RESULTS.md, run of ${rel.date ?? "?"}; 1 KB)`);
    out.push("");
    out.push(`madmail A → /mxdeliv → B: ${fmtInt(rel.rate ?? NaN)} msg/s delivered; CPU per message A ${fmtDec(rel.a, 3)} ms + B ${fmtDec(rel.b, 3)} ms + load generator ${fmtDec(rel.gen, 3)} ms = **${fmtDec(rel.a + rel.b + rel.gen, 3)} ms**. Postfix → smtp-sink: ${fmtInt(pfRate)} msg/s.`);
    out.push("");
  }
  const rsa = rows.sign[0];
  const wcPar = rows.sign[2];
  const w1 = rows.http.find((r) => r.label.startsWith("POST /mxdeliv →") && r.note === "1024 B");
  const n1 = rows.http.find((r) => r.label.startsWith("POST /mxdeliv,") && r.note === "1024 B");
  if (rsa && w1 && n1) {
    const per = (r: Row, s: number) => (1000 * s) / r.n;
    const sig = per(rsa, rsa.user + rsa.sys);
    const recv = per(w1, w1.peer!.user + w1.peer!.sys);
    const httpOnly = per(n1, n1.peer!.user + n1.peer!.sys);
    const cli = per(w1, w1.user + w1.sys);
    const floor = sig + recv + cli;
    const kt = per(w1, w1.kthreads);
    out.push("### Budget");
    out.push("");
    out.push(
      `Target: ≥ 2 × ${fmtInt(pfRate)} = ${fmtInt(2 * pfRate)} msg/s (1 KB, Postfix → smtp-sink ${rel.postfix ? "from RESULTS.md" : "as in the issue"}); on ${NPROC} cores that is ${NPROC} ÷ ${fmtInt(2 * pfRate)} s = **${fmtDec(budget, 3)} ms of CPU per message** for sender, receiver and load generator together. ` +
        `Floor per message = RSA sign ${fmtDec(sig, 3)} ms (node:crypto, one at a time${wcPar ? `; WebCrypto ${CLIENTS} in flight: ${fmtDec(per(wcPar, wcPar.user + wcPar.sys), 3)} ms` : ""}) + receiver ${fmtDec(recv, 3)} ms (of which HTTP alone ${fmtDec(httpOnly, 3)} ms, durable write ≈ ${fmtDec(recv - httpOnly, 3)} ms) + HTTP client ${fmtDec(cli, 3)} ms = **${fmtDec(floor, 3)} ms**, ` +
        `i.e. ${fmtDec((100 * floor) / budget, 0)}% of the budget (at most ${fmtInt((1000 * NPROC) / floor)} msg/s if the ${NPROC} cores did nothing else), leaving ${fmtDec(budget - floor, 3)} ms for everything not in the floor: SMTP submission (the load generator and A's SMTP server), the SQLite queue (insert, state updates, their fsyncs), DKIM body hashing and header canonicalisation, and logging. ` +
        `Counting also the kernel threads during the 1 KB write run (${fmtDec(kt, 3)} ms per message: the I/O that fsync causes; jbd2 commits on a journalled fs) gives ${fmtDec(floor + kt, 3)} ms = ${fmtDec((100 * (floor + kt)) / budget, 0)}% of the budget; ` +
        `the whole machine was busy ${fmtDec(per(rsa, rsa.busy) + per(w1, w1.busy), 3)} ms per message in the sign and 1 KB write runs together (an upper bound: it includes irq/softirq work and anyone else's load).` +
        (rel.a !== undefined && rel.b !== undefined && rel.gen !== undefined ? ` The relay as measured uses ${fmtDec(rel.a + rel.b + rel.gen, 3)} ms per message, ${fmtDec((rel.a + rel.b + rel.gen) / floor, 1)}× this floor.` : ""),
    );
  }
  out.push(...problemsBlock(problems));
  return out.join("\n");
}

const INTRO = `## Floor: the unavoidable CPU per message of a durable relay (floor.bench.ts)

What it measures: stand-ins for the parts of the relay that cannot be avoided, without madmail: an RSA-2048
DKIM signature, a durable Maildir write (fsync of the file and of new/), and a minimal Bun.serve receiver
for POST /mxdeliv with that write, driven by keep-alive fetch() clients; their CPU per message against the
budget that 2× Postfix → smtp-sink leaves on this machine.`;

finish({ report: rows.sign.length ? report() : "", heading: INTRO, bench: "floor.bench.ts", noResults: values["no-results"], problems, exitCode });
