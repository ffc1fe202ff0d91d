// The server's own pull client: one loop per enabled exchanger with a remote token, against a
// fake partner, with the real pipeline; configuration changed by the CLI (another process)
// while it runs. Also `exchanger set --remote-token-file / --no-remote-token`.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { openDb, type OpenedDb } from "../../src/db/open.ts";
import { startPollers, type Pollers } from "../../src/exchanger/poller.ts";
import { openCore, type Core } from "../../src/server.ts";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";
import { fakePartner, type FakePartner, type HeldMessage } from "./_fake-partner.ts";

const ENCRYPTED = readFileSync(resolve(import.meta.dir, "../fixtures/samples/pass-deltachat-2.57-chat.eml"));
const msg = (id: string, rcpt_to = ["bob@chat.test"]): HeldMessage => ({ id, mail_from: "alice@peer.test", rcpt_to, body: ENCRYPTED });

let sb: Sandbox;
let partner: FakePartner;
let state: OpenedDb;
let core: Core;
let pollers: Pollers | undefined;

const run = async (...args: string[]) => {
  const r = await sb.run(args);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: ${r.stderr}`);
  return r;
};
const tokenFile = (name: string, token: string) => {
  const f = join(sb.dir, name);
  writeFileSync(f, `${token}\n`, { mode: 0o600 });
  return f;
};
const row = () => state.db.selectFrom("exchangers").selectAll().where("name", "=", "hub").executeTakeFirstOrThrow();
const maildir = (address: string) => {
  const dir = join(sb.dir, "data", "mail", address, "new");
  return existsSync(dir) ? readdirSync(dir) : [];
};
async function until(what: string, check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await Bun.sleep(25);
  }
}

beforeEach(async () => {
  sb = sandbox();
  partner = fakePartner({ token: "good-token" });
  await run("init", "--domain", "chat.test");
  await run("user", "add", "bob@chat.test");
  await run("exchanger", "add", "hub", partner.url, "--mode", "pull", "--poll-interval", "5");
  await run("exchanger", "set", "hub", "--remote-token-file", tokenFile("hub.token", "good-token"));
  state = await openDb(sb.db);
  core = await openCore(state);
});
afterEach(async () => {
  await pollers?.stop();
  pollers = undefined;
  await core.writes.drain();
  await core.store.dispose();
  await state.close();
  await partner.stop();
  sb.cleanup();
});

/** poll_interval below the CLI's minimum of 5 s, to keep the tests short. */
const setInterval_ = (s: number) => state.db.updateTable("exchangers").set({ poll_interval: s }).where("name", "=", "hub").execute();

describe("startPollers", () => {
  test("pulls, delivers, acks, and records last_poll_at with last_error null", async () => {
    partner.add(msg("p1"), msg("p2"));
    await state.db.updateTable("exchangers").set({ last_error: "old trouble" }).where("name", "=", "hub").execute();
    const before = Date.now();
    pollers = startPollers({ core, db: state.db, wait: 1 });
    await until("two messages in Maildir", () => maildir("bob@chat.test").length === 2);
    await until("acks", () => partner.held.size === 0);
    await until("last_poll_at", async () => ((await row()).last_poll_at ?? 0) >= before);
    expect((await row()).last_error).toBeNull();
    expect(partner.pulls[0]).toMatchObject({ path: "/exchanger/pull", wait: 1, max: 50, auth: "Bearer good-token" });
    expect(partner.acks.flat().sort()).toEqual(["p1", "p2"]);
  });

  test("rests poll_interval after an empty answer; pulls again at once while mail comes", async () => {
    await setInterval_(2);
    partner.add(msg("r1"), msg("r2"), msg("r3"));
    pollers = startPollers({ core, db: state.db, wait: 0 });
    await until("first pulls", () => partner.pulls.length >= 2);
    await Bun.sleep(1000);
    // Pull 1 brought mail, pull 2 (at once) was empty; then the rest: no third pull yet.
    expect(partner.pulls).toHaveLength(2);
    await until("the pull after the rest", () => partner.pulls.length === 3, 3000);
  });

  test("an exchanger enabled while running is picked up (another process committed); disabling stops its loop and its long poll", async () => {
    await run("exchanger", "disable", "hub");
    pollers = startPollers({ core, db: state.db, wait: 30 });
    await Bun.sleep(700);
    expect(partner.pulls).toHaveLength(0);

    const t0 = Date.now();
    await run("exchanger", "enable", "hub");
    await until("a pull after enable", () => partner.pulls.length === 1, 3000);
    expect(Date.now() - t0).toBeLessThan(2500); // data_version, not the 5 s rescan
    partner.add(msg("e1")); // arrives during the long poll: answered at once
    await until("delivered", () => maildir("bob@chat.test").length === 1, 3000);

    await until("the next long poll (at once: mail came)", () => partner.pulls.length === 2);
    await run("exchanger", "disable", "hub");
    await until("the long poll aborted", () => partner.abortedPulls === 1, 3000);
    const n = partner.pulls.length;
    await Bun.sleep(1500);
    expect(partner.pulls).toHaveLength(n);
  });

  test("removing the exchanger or clearing its token stops the loop", async () => {
    pollers = startPollers({ core, db: state.db, wait: 30, rescanMs: 200 });
    await until("long poll", () => partner.pulls.length === 1);
    await run("exchanger", "set", "hub", "--no-remote-token");
    await until("aborted", () => partner.abortedPulls === 1, 3000);
    await run("exchanger", "set", "hub", "--remote-token-file", tokenFile("hub.token", "good-token"));
    await until("polled again", () => partner.pulls.length === 2, 3000);
    await run("exchanger", "remove", "hub");
    await until("aborted again", () => partner.abortedPulls === 2, 3000);
  });

  test("a refused token is recorded in last_error (once), and cleared when the token is fixed", async () => {
    await run("exchanger", "set", "hub", "--remote-token-file", tokenFile("bad.token", "bad-token"));
    await setInterval_(1);
    pollers = startPollers({ core, db: state.db, wait: 0 });
    await until("last_error", async () => (await row()).last_error !== null);
    const r = await row();
    expect(r.last_error).toBe(`GET ${partner.url}/exchanger/pull: 401 {"error":"unauthorized"}: the partner does not accept our token (wrong, unknown or disabled there)`);
    expect(r.last_poll_at).toBeNull();

    await run("exchanger", "set", "hub", "--remote-token-file", tokenFile("hub.token", "good-token"));
    await until("recovered", async () => (await row()).last_error === null && (await row()).last_poll_at !== null, 4000);
  });

  test("stop() ends the long polls under way within a second", async () => {
    await run("exchanger", "add", "hub2", partner.url);
    await run("exchanger", "set", "hub2", "--remote-token-file", tokenFile("hub.token", "good-token"));
    pollers = startPollers({ core, db: state.db, wait: 30 });
    await until("two long polls", () => partner.pulls.length === 2);
    const t0 = performance.now();
    await pollers.stop();
    expect(performance.now() - t0).toBeLessThan(1000);
    await until("both aborted at the partner", () => partner.abortedPulls === 2, 2000);
  });
});

describe("exchanger set --remote-token-file / --no-remote-token", () => {
  test("stores the first line of the file, clears it again", async () => {
    writeFileSync(join(sb.dir, "t2"), "  second-token  \nignored\n", { mode: 0o600 });
    expect((await sb.run(["exchanger", "set", "hub", "--remote-token-file", "t2"])).stdout).toBe("Exchanger updated: hub\n");
    expect((await row()).remote_token).toBe("second-token");
    expect((await sb.run(["exchanger", "set", "hub", "--no-remote-token"])).code).toBe(0);
    expect((await row()).remote_token).toBeNull();
  });

  test.each([
    [["--remote-token"], 2, "madmail: --remote-token takes no value: give --remote-token-file FILE (or --no-remote-token to clear it)\n"],
    [["--remote-token-file", "t", "--no-remote-token"], 2, "madmail: give either --remote-token-file or --no-remote-token, not both\n"],
    [["--remote-token-file", "missing"], 1, "madmail: cannot read token file missing: ENOENT\n"],
    [["--remote-token-file", "empty"], 1, "madmail: token file empty is empty (expected the token on its first line)\n"],
  ])("refuses %p without changing anything", async (flags, code, stderr) => {
    writeFileSync(join(sb.dir, "t"), "x\n", { mode: 0o600 });
    writeFileSync(join(sb.dir, "empty"), "", { mode: 0o600 });
    await core.writes.drain();
    const before = dumpDb(sb.db);
    const r = await sb.run(["exchanger", "set", "hub", ...flags]);
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code, stdout: "", stderr });
    expect(dumpDb(sb.db)).toBe(before);
  });

  test("help documents both", async () => {
    const out = (await sb.run(["exchanger", "set", "--help"])).stdout;
    expect(out).toContain("--remote-token-file=<FILE>");
    expect(out).toContain("--no-remote-token");
  });
});
