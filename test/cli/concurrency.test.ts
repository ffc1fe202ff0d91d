// 20 CLI writers started at once from a shell loop: all succeed, every row is there, and
// nobody sees "database is locked" (busy_timeout + BEGIN IMMEDIATE + WAL).
import { afterEach, beforeEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { sandbox, type Sandbox } from "../helpers/binary.ts";

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

const N = 20;

/**
 * Starts N copies of `madmail CMD` (with $i replaced by 1..N) in the background from one bash
 * loop, then waits for each; returns per process its exit code, stdout and stderr.
 */
async function burst(cmd: string): Promise<{ code: number; stdout: string; stderr: string }[]> {
  const script = `
    for i in $(seq ${N}); do "$MADMAIL" ${cmd} >"$OUT/out.$i" 2>"$OUT/err.$i" & pids[$i]=$!; done
    for i in $(seq ${N}); do wait "\${pids[$i]}"; echo "$?" >"$OUT/rc.$i"; done`;
  const proc = Bun.spawn(["bash", "-c", script], {
    cwd: sb.dir,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", MADMAIL: sb.bin, MADMAIL_DB: sb.db, OUT: sb.dir },
    stdout: "inherit",
    stderr: "inherit",
  });
  expect(await proc.exited).toBe(0);
  return Array.from({ length: N }, (_, k) => {
    const f = (name: string) => readFileSync(join(sb.dir, `${name}.${k + 1}`), "utf8");
    return { code: Number(f("rc")), stdout: f("out"), stderr: f("err") };
  });
}

const expectAllOk = (runs: { code: number; stderr: string }[]) => {
  expect(runs.map((r) => r.stderr).filter(Boolean)).toEqual([]);
  expect(runs.map((r) => r.code)).toEqual(Array(N).fill(0));
};
const json = async (args: string[]) => {
  const r = await sb.run([...args, "--json"]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
};
const range = (f: (i: number) => string) => Array.from({ length: N }, (_, k) => f(k + 1)).sort();

test("20 endpoint-cache writers on a file that does not exist yet (they race to migrate it)", async () => {
  const runs = await burst("endpoint-cache set d$i.example t$i.example --comment c$i");
  expectAllOk(runs);
  expect(runs.map((r) => r.stdout).sort()).toEqual(range((i) => `Successfully set endpoint override: d${i}.example → t${i}.example\n`));
  const rows = await json(["endpoint-cache", "list"]);
  expect(rows.map((r: { lookup_key: string }) => r.lookup_key).sort()).toEqual(range((i) => `d${i}.example`));
  expect(rows.map((r: { comment: string }) => r.comment).sort()).toEqual(range((i) => `c${i}`));
});

test("20 exchanger writers on an existing file", async () => {
  expect((await sb.run(["init", "--domain", "local.example"])).code).toBe(0);
  const runs = await burst("exchanger add x$i https://x$i.example --domains d$i.example");
  expectAllOk(runs);
  const rows = await json(["exchanger", "list"]);
  expect(rows.map((r: { name: string; domains: string[] }) => `${r.name}:${r.domains}`).sort()).toEqual(range((i) => `x${i}:d${i}.example`));
});

test("20 concurrent init runs: one admin token printed, every domain added", async () => {
  const runs = await burst("init --domain d$i.example");
  expectAllOk(runs);
  const withToken = runs.filter((r) => r.stdout.includes("Admin token (shown once"));
  expect(withToken).toHaveLength(1);
  const rows = await json(["domain", "list"]);
  expect(rows.map((r: { name: string }) => r.name).sort()).toEqual(range((i) => `d${i}.example`));
});

test("20 mixed writers: domains, rewrites, exchangers and settings at once", async () => {
  expect((await sb.run(["exchanger", "add", "hub", "https://hub.example"])).code).toBe(0);
  // $i picks the command: 1-5 domain add, 6-10 rewrites to the exchanger, 11-15 exchanger set, 16-20 config set.
  const runs = await burst(`$( case $(( (i - 1) / 5 )) in
      0) echo domain add dom$i.example ;;
      1) echo endpoint-cache set rw$i.example exchanger:hub ;;
      2) echo exchanger set hub --poll-interval $((i * 10)) ;;
      3) echo config set listen.http 127.0.0.1:$((9000 + i)) ;;
    esac )`);
  expectAllOk(runs);
  expect((await json(["domain", "list"])).length).toBe(5);
  expect((await json(["endpoint-cache", "list"])).map((r: { target_host: string }) => r.target_host)).toEqual(Array(5).fill("exchanger:hub"));
  expect([110, 120, 130, 140, 150]).toContain((await json(["exchanger", "list"]))[0].poll_interval);
  expect((await json(["config", "get", "listen.http"])).value).toMatch(/^127\.0\.0\.1:90(1[6-9]|20)$/);
});
