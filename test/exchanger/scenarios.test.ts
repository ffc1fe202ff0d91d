// The three exchanger set-ups end to end, with real servers on loopback: A is "restricted"
// (its route to b.test ends at a closed port), X is the exchanger, B the destination.
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { sandbox, type Sandbox } from "../helpers/binary.ts";
import { ENCRYPTED, maildirNew, readDelivered } from "../inbound/_fixtures.ts";

const running: ServerHandle[] = [];
const boxes: Sandbox[] = [];
afterAll(async () => {
  for (const s of running) {
    s.proc.kill("SIGKILL");
    s.box.cleanup();
  }
  for (const b of boxes) b.cleanup();
});

type Setup = (string[] | { args: string[]; stdin: string })[];
async function serve(setup: Setup): Promise<ServerHandle> {
  const s = await startServe({ setup });
  running.push(s);
  return s;
}


/** Makes a token for exchanger NAME on `s` and writes it to a file for the other side. */
async function tokenFile(s: ServerHandle, name: string): Promise<string> {
  const token = (await s.box.run(["exchanger", "token", name])).stdout.trim();
  const file = join(s.box.dir, `${name}.token`);
  writeFileSync(file, token + "\n", { mode: 0o600 });
  return file;
}

const closedPort = "http://127.0.0.1:9/mxdeliv";

describe("exchanger set-ups", () => {
  test("push-pull: A pushes to X; B's server pulls from X by long polling", async () => {
    const x = await serve([
      ["init", "--domain", "x.test"],
      ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"],
      ["config", "set", "relay.domains", "b.test"],
    ]);
    const tok = await tokenFile(x, "bside");
    const b = await serve([
      ["init", "--domain", "b.test"], ["user", "add", "bob@b.test"],
      ["exchanger", "add", "x", `http://127.0.0.1:${x.httpPort}`, "--poll-interval", "5"],
      ["exchanger", "set", "x", "--remote-token-file", tok],
    ]);
    const a = await serve([
      ["init", "--domain", "a.test"],
      ["endpoint-cache", "set", "b.test", closedPort],
      ["exchanger", "add", "x", `http://127.0.0.1:${x.httpPort}`, "--domains", "b.test"],
    ]);
    // The endpoint rewrite wins over the exchanger (router order), so A's rewrite must go: the
    // exchanger is what carries b.test mail.
    await a.box.run(["endpoint-cache", "remove", "b.test"]);
    expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
    await waitUntil("bob's mail", () => maildirNew(b, "bob@b.test").length === 1);
    expect(readDelivered(b, "bob@b.test")[0]!.equals(ENCRYPTED())).toBe(true);
    const xs = JSON.parse((await x.box.run(["exchanger", "status", "bside", "--json"])).stdout);
    expect(xs).toMatchObject({ held: 0 });
    expect(xs.last_pull_at).not.toBeNull();
    const bx = JSON.parse((await b.box.run(["exchanger", "list", "--json"])).stdout)[0];
    expect(bx.last_poll_at).not.toBeNull();
    expect(bx.last_error).toBeNull();
  }, 60_000);

  test("pull-pull: X's cron pull-client pulls from A; B pulls from X", async () => {
    const x = await serve([
      ["init", "--domain", "x.test"],
      ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"],
    ]);
    const xTok = await tokenFile(x, "bside");
    const a = await serve([
      ["init", "--domain", "a.test"],
      ["exchanger", "add", "x", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"],
    ]);
    const aTok = await tokenFile(a, "x");
    const b = await serve([
      ["init", "--domain", "b.test"], ["user", "add", "bob@b.test"],
      ["exchanger", "add", "x", `http://127.0.0.1:${x.httpPort}`, "--poll-interval", "5"],
      ["exchanger", "set", "x", "--remote-token-file", xTok],
    ]);
    for (let i = 0; i < 3; i++) {
      expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: Buffer.concat([Buffer.from(`X-Seq: ${i}\n`), ENCRYPTED()]) })).code).toBe(0);
    }
    await waitUntil("held at A", async () => JSON.parse((await a.box.run(["exchanger", "status", "x", "--json"])).stdout).held === 3);
    // The cron job on X: exits 0 with a one-line summary.
    const cron = await x.box.run(["pull-client", "--url", a.url, "--token-file", aTok]);
    expect(cron.code).toBe(0);
    expect(cron.stdout).toMatch(/^pulled 3, delivered 0, relayed 3, refused 0 in \d+(\.\d+)?s\n$/);
    await waitUntil("bob's mail", () => maildirNew(b, "bob@b.test").length === 3);
    const seqs = readDelivered(b, "bob@b.test").map((f) => /^X-Seq: (\d)/.exec(f.toString("latin1"))?.[1]).sort();
    expect(seqs).toEqual(["0", "1", "2"]);
    // Nothing left: a second run pulls nothing and still exits 0.
    const again = await x.box.run(["pull-client", "--url", a.url, "--token-file", aTok]);
    expect(again.code).toBe(0);
    expect(again.stdout).toStartWith("pulled 0, delivered 0, relayed 0, refused 0 in ");
  }, 60_000);
});

describe("pulling side crashes", () => {
  test("kill -9 between receiving a batch and acking: every message arrives exactly once", async () => {
    const a = await serve([
      ["init", "--domain", "a.test"],
      ["exchanger", "add", "x", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"],
      ["config", "set", "exchanger.pull_lease", "10s"],
    ]);
    const aTok = await tokenFile(a, "x");
    const n = 300;
    holdMessages(a.box.db, "x", n);
    // X is the final destination here: bob@b.test is its local user.
    const x = sandbox();
    boxes.push(x);
    await x.run(["init", "--domain", "b.test"]);
    await x.run(["user", "add", "bob@b.test"]);
    const proc = Bun.spawn([x.bin, "pull-client", "--url", a.url, "--token-file", aTok, "--max-time", "60"], {
      cwd: x.dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", MADMAIL_DB: x.db, NO_COLOR: "1" }, stdout: "pipe", stderr: "pipe",
    });
    const newDir = () => maildirNew({ box: x } as ServerHandle, "bob@b.test").length;
    await waitUntil("first messages", () => newDir() >= 20, 20_000);
    proc.kill("SIGKILL");
    await proc.exited;
    const atKill = newDir();
    expect(atKill).toBeLessThan(n);
    // The stale lock of the killed run does not block the next one; leased messages come back
    // after exchanger.pull_lease and are stored once (their ids were remembered).
    await Bun.sleep(10_500);
    const r = await x.run(["pull-client", "--url", a.url, "--token-file", aTok, "--max-time", "60"]);
    expect(r.code).toBe(0);
    const seqs = readDelivered({ box: x } as ServerHandle, "bob@b.test").map((f) => /^X-Seq: (\d+)/.exec(f.toString("latin1"))![1]);
    expect(seqs.length).toBe(n);
    expect(new Set(seqs).size).toBe(n);
    expect(JSON.parse((await a.box.run(["exchanger", "status", "x", "--json"])).stdout).held).toBe(0);
  }, 90_000);
});

describe("backlog", () => {
  test("a 10,000-message backlog is drained by pull-client", async () => {
    const a = await serve([["init", "--domain", "a.test"], ["exchanger", "add", "x", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"]]);
    const aTok = await tokenFile(a, "x");
    const n = 10_000;
    holdMessages(a.box.db, "x", n);
    const x = sandbox();
    boxes.push(x);
    await x.run(["init", "--domain", "b.test"]);
    await x.run(["user", "add", "bob@b.test", "--quota", "1G"]);
    const t0 = performance.now();
    const r = await x.run(["pull-client", "--url", a.url, "--token-file", aTok, "--max-time", "300", "--json"]);
    const s = (performance.now() - t0) / 1000;
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ pulled: n, delivered: n, relayed: 0, refused: 0 });
    expect(maildirNew({ box: x } as ServerHandle, "bob@b.test").length).toBe(n);
    expect(JSON.parse((await a.box.run(["exchanger", "status", "x", "--json"])).stdout).held).toBe(0);
    console.log(`drained ${n} in ${s.toFixed(1)} s (${Math.round(n / s)} msg/s)`);
  }, 300_000);
});

/** Puts `n` messages for bob@b.test on hold for exchanger NAME, as the worker would. */
function holdMessages(dbPath: string, name: string, n: number): void {
  const db = new Database(dbPath);
  db.exec("PRAGMA busy_timeout = 10000");
  const now = Date.now();
  const insM = db.prepare("INSERT INTO messages (id, mail_from, body, size, door, auth_user, received_at) VALUES (?, ?, ?, ?, 'send', NULL, ?)");
  const insD = db.prepare(`INSERT INTO deliveries (id, message_id, rcpt_domain, rcpts, state, route, tries, next_attempt_at, lease_until, last_error, created_at, updated_at, expires_at, rerouted_to)
    VALUES (?, ?, 'b.test', '["bob@b.test"]', 'deferred', ?, 1, ?, NULL, 'held', ?, ?, ?, NULL)`);
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const body = Buffer.concat([Buffer.from(`X-Seq: ${i}\n`), ENCRYPTED()]);
      const id = `t${String(i).padStart(15, "0")}`;
      insM.run(`m${id.slice(1)}`, "alice@a.test", body, body.length, now);
      insD.run(id, `m${id.slice(1)}`, `exchanger:${name}`, now + 3600_000, now + i, now, now + 86400_000);
    }
  })();
  db.close();
}
