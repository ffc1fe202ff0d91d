// Queue admin commands on a big queue (not a test: bun test ignores *.bench.ts).
//
//   ./node_modules/.bin/bun test/bench/queue.bench.ts [--rows 100000] [--runs 10] [--keep]
//
// Needs dist/madmail (./node_modules/.bin/bun build.ts). Creates a state file with `madmail init`,
// then fills it in one bun:sqlite transaction with ROWS deferred deliveries (a peer outage: 1-3
// destination domains per message, ~500 domains of which a few are big, ages up to 5 days,
// bodies of 1-8 KB, one attempt each), and times on the compiled binary, with hyperfine when it
// is installed (else RUNS timed runs each):
//   madmail queue list                     first page (100 oldest entries); goal < 0.5 s
//   madmail queue list --domain BIGGEST    the domain with most entries;    goal < 0.5 s
//   madmail queue stats                    counts + qshape table;           goal < 1 s
// plus `madmail --version` for the start-up cost included in each figure.
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BIN, hyperfine, queueId, timeRuns } from "./_lib.ts";

const { values } = parseArgs({
  options: {
    rows: { type: "string", default: "100000" },
    runs: { type: "string", default: "10" },
    keep: { type: "boolean", default: false },
  },
});
const ROWS = Number(values.rows);
const RUNS = Number(values.runs);
if (!existsSync(BIN)) {
  console.error(`${BIN} is missing: run ./node_modules/.bin/bun build.ts first`);
  process.exit(1);
}

const dir = mkdtempSync(join(tmpdir(), "madmail-queue-bench-"));
const dbPath = join(dir, "madmail.db");
if (!values.keep) process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const env = { ...process.env, MADMAIL_DB: dbPath, NO_COLOR: "1" };

const init = Bun.spawnSync([BIN, "init", "--quiet"], { env });
if (init.exitCode !== 0) throw new Error(`madmail init failed: ${init.stderr.toString()}`);

const MIN = 60_000;
const DAY = 1440 * MIN;
const now = Date.now();
const noise = new Uint8Array(8192).map(() => 65 + Math.floor(Math.random() * 26));
const t0 = performance.now();
let biggest = "";
{
  const db = new Database(dbPath);
  const msg = db.prepare("INSERT INTO messages (id, mail_from, body, size, door, auth_user, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
  const dlv = db.prepare(`INSERT INTO deliveries (id, message_id, rcpt_domain, rcpts, state, route, tries, next_attempt_at, lease_until,
    last_error, created_at, updated_at, expires_at, rerouted_to) VALUES (?, ?, ?, ?, 'deferred', ?, ?, ?, NULL, ?, ?, ?, ?, NULL)`);
  const att = db.prepare("INSERT INTO delivery_attempts (delivery_id, at, transport, endpoint, outcome, detail, ms) VALUES (?, ?, ?, ?, 'temporary', ?, ?)");
  const perDomain = new Map<string, number>();
  db.transaction(() => {
    let made = 0;
    for (let m = 0; made < ROWS; m++) {
      const created = now - Math.floor(Math.random() * 5 * DAY);
      const mid = queueId(created);
      const sender = `user${m % 2000}@chat.example`;
      const head = `From: <${sender}>\r\nTo: ...\r\nSubject: [...]\r\nMessage-ID: <${mid}@chat.example>\r\n` +
        `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n`;
      const body = new Uint8Array(head.length + 1000 + Math.floor(Math.random() * 7000));
      body.set(new TextEncoder().encode(head));
      body.set(noise.subarray(0, body.length - head.length), head.length);
      msg.run(mid, sender, body, body.length, "submission", sender, created);
      const domains = 1 + Math.floor(Math.random() * 3);
      for (let j = 0; j < domains && made < ROWS; j++, made++) {
        // Cubed uniform: d0 gets ~20% of the rows, most of the ~500 domains a handful.
        const domain = `d${Math.floor(Math.random() ** 3 * 500)}.example`;
        perDomain.set(domain, (perDomain.get(domain) ?? 0) + 1);
        const id = queueId(created);
        const tries = 1 + Math.floor(Math.random() * 40);
        const error = `connect ECONNREFUSED mx.${domain}:443; smtp mx.${domain}:25: 421 4.7.0 Service not available, try again later`;
        dlv.run(id, mid, domain, JSON.stringify([`bob${j}@${domain}`, `carol${j}@${domain}`]), `https:mx.${domain}`, tries,
          now + Math.floor(Math.random() * 2 * 60 * MIN), error, created, now - Math.floor(Math.random() * 60 * MIN), created + 5 * DAY);
        att.run(id, now - Math.floor(Math.random() * 60 * MIN), "smtp", `mx.${domain}:25`, "421 4.7.0 Service not available", 80 + Math.floor(Math.random() * 400));
      }
    }
  })();
  db.close();
  biggest = [...perDomain].sort((a, b) => b[1] - a[1])[0]![0];
  console.log(`# ${ROWS} deferred deliveries, ${perDomain.size} domains (biggest ${biggest}: ${perDomain.get(biggest)}), ` +
    `state file ${(statSync(dbPath).size / 1048576).toFixed(0)} MiB, filled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
console.log(`# ${cpus().length} CPUs, load average at start: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);

interface Case { name: string; args: string[]; goalMs: number | null }
const cases: Case[] = [
  { name: "madmail --version", args: ["--version"], goalMs: null },
  { name: "madmail queue list", args: ["queue", "list"], goalMs: 500 },
  { name: `madmail queue list --domain ${biggest}`, args: ["queue", "list", "--domain", biggest], goalMs: 500 },
  { name: "madmail queue stats", args: ["queue", "stats"], goalMs: 1000 },
];

// Each command must work before it is timed.
for (const c of cases) {
  const r = Bun.spawnSync([BIN, ...c.args], { env });
  if (r.exitCode !== 0) throw new Error(`${c.name} failed: ${r.stderr.toString()}`);
}

const HYPERFINE = Bun.which("hyperfine");
console.log(`# timing with ${HYPERFINE ? `hyperfine (2 warm-up runs, ${RUNS} runs)` : `${RUNS} runs each after 2 warm-up runs`}\n`);
console.log("| command | mean | min | max | goal |");
console.log("|---|---|---|---|---|");
let missed = 0;
for (const c of cases) {
  // ms per run: hyperfine's (2 warm-up runs, then RUNS), or RUNS timed runs after 2 unmeasured ones
  const times = HYPERFINE
    ? hyperfine(HYPERFINE, [BIN, ...c.args], { runs: RUNS, json: join(dir, "hyperfine.json"), flags: ["--output", "null"], env, stdout: "ignore", what: "hyperfine failed" }).times.map((s) => s * 1000)
    : timeRuns(RUNS, () => Bun.spawnSync([BIN, ...c.args], { env, stdout: "ignore" }), 2);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const met = c.goalMs === null ? "" : mean < c.goalMs ? `< ${c.goalMs} ms: met` : `< ${c.goalMs} ms: MISSED`;
  if (c.goalMs !== null && mean >= c.goalMs) missed++;
  console.log(`| \`${c.name}\` | ${ms(mean)} | ${ms(Math.min(...times))} | ${ms(Math.max(...times))} | ${met} |`);
}
if (values.keep) console.log(`\nstate file kept: ${dbPath}`);
process.exit(missed ? 1 : 0);

function ms(x: number): string {
  return `${x.toFixed(0)} ms`;
}
