// madmail exchanger: list, add, set, enable, disable, remove, token.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const ok = async (args: string[]) => {
  const r = await sb.run(args);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
  return r.stdout;
};
const listJson = async () => JSON.parse(await ok(["exchanger", "list", "--json"]));
const one = async (name: string) => (await listJson()).find((x: { name: string }) => x.name === name);
/** Runs a command that must be refused and proves the state file did not change. */
const refused = async (args: string[], code: number, stderr: string) => {
  const before = dumpDb(sb.db);
  const r = await sb.run(args);
  expect({ args, ...r }).toEqual({ args, code, stdout: "", stderr: `madmail: ${stderr}\n` });
  expect(dumpDb(sb.db)).toBe(before);
};

describe("add", () => {
  test("defaults: push, 60 s, no domains, enabled, no token", async () => {
    expect(await ok(["exchanger", "add", "relay1", "https://Relay1.example/"])).toBe("Exchanger added: relay1 -> https://relay1.example\n");
    const x = await one("relay1");
    expect(Object.keys(x)).toEqual([
      "name", "url", "mode", "domains", "poll_interval", "enabled", "fallback", "has_token",
      "last_poll_at", "last_pull_at", "last_error", "has_remote_token", "stale", "created_at", "updated_at",
    ]);
    expect(x).toMatchObject({
      name: "relay1", url: "https://relay1.example", mode: "push", domains: [], poll_interval: 60, enabled: true,
      fallback: false, has_token: false, last_poll_at: null, last_pull_at: null, last_error: null, has_remote_token: false, stale: false,
    });
    expect(x.created_at).toMatch(ISO);
  });

  test("every flag", async () => {
    await ok(["exchanger", "add", "hub.2_x", "http://hub.example:8443/base/", "--mode", "pull", "--poll-interval", "30",
      "--domains", "B.example, a.example,b.example.", "--fallback"]);
    expect(await one("hub.2_x")).toMatchObject({
      url: "http://hub.example:8443/base", mode: "pull", poll_interval: 30, domains: ["a.example", "b.example"], fallback: true,
    });
    await ok(["exchanger", "add", "all", "https://all.example", "--domains", "*", "--poll-interval=86400"]);
    expect(await one("all")).toMatchObject({ domains: ["*"], poll_interval: 86400 });
    await ok(["exchanger", "add", "min", "https://min.example", "--poll-interval", "5"]);
    expect((await one("min")).poll_interval).toBe(5);
  });

  const INTERVAL = (v: string) => `invalid poll interval "${v}": expected whole seconds from 5 to 86400`;
  const URL_ERR = (v: string) => `invalid exchanger URL "${v}": expected http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]`;
  const NAME_ERR = (v: string) => `invalid exchanger name "${v}": use 1-63 characters a-z 0-9 . _ - starting with a letter or digit`;
  test.each([
    [["Relay", "https://x.example"], 2, NAME_ERR("Relay")],
    [[".relay", "https://x.example"], 2, NAME_ERR(".relay")],
    [["a".repeat(64), "https://x.example"], 2, NAME_ERR("a".repeat(64))],
    [["r/1", "https://x.example"], 2, NAME_ERR("r/1")],
    [["r2", "ftp://x.example"], 2, URL_ERR("ftp://x.example")],
    [["r2", "x.example"], 2, URL_ERR("x.example")],
    [["r2", "https://"], 2, URL_ERR("https://")],
    [["r2", "https://u:p@x.example"], 2, URL_ERR("https://u:p@x.example")],
    [["r2", "https://bad_host.example"], 2, URL_ERR("https://bad_host.example")],
    [["r2", "https://x.example", "--poll-interval", "4"], 2, INTERVAL("4")],
    [["r2", "https://x.example", "--poll-interval", "86401"], 2, INTERVAL("86401")],
    [["r2", "https://x.example", "--poll-interval", "1m"], 2, INTERVAL("1m")],
    [["r2", "https://x.example", "--poll-interval", "-5"], 2, INTERVAL("-5")],
    [["r2", "https://x.example", "--domains", "a..b"], 2,
      'invalid domain "a..b" in --domains: expected a comma list of domains (a.example,b.example) or *'],
    [["r2", "https://x.example", "--domains", "*,a.example"], 2,
      'invalid domain "*" in --domains: expected a comma list of domains (a.example,b.example) or *'],
    [["r2", "https://x.example", "--domains", " , "], 2,
      `no domain in --domains " , ": expected a comma list of domains (a.example,b.example), * , or '' for none`],
    [["relay1", "https://other.example"], 1, 'exchanger "relay1" already exists; change it with `madmail exchanger set relay1 ...`'],
  ])("refuses %p", async (args, code, message) => {
    await ok(["exchanger", "add", "relay1", "https://relay1.example"]);
    await refused(["exchanger", "add", ...args], code, message);
  });
});

describe("list", () => {
  test("empty", async () => {
    await ok(["init", "--quiet"]);
    expect(await ok(["exchanger", "list"])).toBe("No exchangers. Add one with `madmail exchanger add NAME URL`.\n");
    expect(await ok(["exchanger", "list", "--json"])).toBe("[]\n");
  });

  test("aligned table with every column; never for unset times", async () => {
    await ok(["exchanger", "add", "relay1", "https://relay1.example"]);
    await ok(["exchanger", "add", "hub", "https://hub.example:8443", "--mode", "pull", "--poll-interval", "30", "--domains", "b.example,a.example", "--fallback"]);
    await ok(["exchanger", "disable", "relay1"]);
    expect(await ok(["exchanger", "list"])).toBe([
      "NAME            URL                       MODE  DOMAINS              INTERVAL  ENABLED  LAST POLL  LAST PULL",
      "hub (fallback)  https://hub.example:8443  pull  a.example,b.example  30s       yes      never      never",
      "relay1          https://relay1.example    push  -                    60s       no       never      never",
      "",
    ].join("\n"));
  });
});

describe("set, enable, disable", () => {
  beforeEach(async () => {
    await ok(["exchanger", "add", "relay1", "https://relay1.example", "--domains", "a.example"]);
  });

  test("set changes only what is given and bumps updated_at", async () => {
    const before = await one("relay1");
    await Bun.sleep(5);
    expect(await ok(["exchanger", "set", "relay1", "--url", "http://r2.example/x/", "--mode", "pull", "--poll-interval", "120"]))
      .toBe("Exchanger updated: relay1\n");
    const after = await one("relay1");
    expect(after).toMatchObject({ url: "http://r2.example/x", mode: "pull", poll_interval: 120, domains: ["a.example"], fallback: false, created_at: before.created_at });
    expect(Date.parse(after.updated_at)).toBeGreaterThan(Date.parse(before.updated_at));
    await ok(["exchanger", "set", "relay1", "--domains", "*", "--fallback"]);
    expect(await one("relay1")).toMatchObject({ domains: ["*"], fallback: true, mode: "pull" });
    await ok(["exchanger", "set", "relay1", "--no-fallback"]);
    expect((await one("relay1")).fallback).toBe(false);
    await refused(["exchanger", "set", "relay1", "--domains", ","], 2,
      `no domain in --domains ",": expected a comma list of domains (a.example,b.example), * , or '' for none`);
    expect((await one("relay1")).domains).toEqual(["*"]);
    await ok(["exchanger", "set", "relay1", "--domains", ""]);
    expect((await one("relay1")).domains).toEqual([]);
  });

  test.each([
    [["relay1"], 2, "nothing to change: give at least one of --url, --mode, --poll-interval, --domains, --fallback/--no-fallback, --remote-token-file/--no-remote-token"],
    [["relay1", "--url", "gopher://x"], 2, 'invalid exchanger URL "gopher://x": expected http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]'],
    [["relay1", "--poll-interval", "0"], 2, 'invalid poll interval "0": expected whole seconds from 5 to 86400'],
    [["relay1", "--url", "https://ok.example", "--poll-interval", "100000"], 2, 'invalid poll interval "100000": expected whole seconds from 5 to 86400'],
    [["nope", "--domains", "*"], 1, 'no exchanger named "nope"; see `madmail exchanger list`'],
    [["NOPE", "--domains", "*"], 2, 'invalid exchanger name "NOPE": use 1-63 characters a-z 0-9 . _ - starting with a letter or digit'],
  ])("set refuses %p", async (args, code, message) => {
    await refused(["exchanger", "set", ...args], code, message);
  });

  test("disable and enable", async () => {
    expect(await ok(["exchanger", "disable", "relay1"])).toBe("Exchanger disabled: relay1\n");
    expect((await one("relay1")).enabled).toBe(false);
    expect(await ok(["exchanger", "enable", "relay1"])).toBe("Exchanger enabled: relay1\n");
    expect((await one("relay1")).enabled).toBe(true);
    expect(await ok(["exchanger", "enable", "relay1", "--quiet"])).toBe("");
  });

  test.each([["enable"], ["disable"], ["remove"], ["token"]])("%s of an unknown exchanger exits 1", async (verb) => {
    await refused(["exchanger", verb, "nope"], 1, 'no exchanger named "nope"; see `madmail exchanger list`');
  });
});

describe("remove", () => {
  test("removes the entry", async () => {
    await ok(["exchanger", "add", "relay1", "https://relay1.example"]);
    expect(await ok(["exchanger", "remove", "relay1"])).toBe("Exchanger removed: relay1\n");
    expect(await listJson()).toEqual([]);
  });

  test("refused while an endpoint rewrite points at it, naming the rewrite", async () => {
    await ok(["exchanger", "add", "relay1", "https://relay1.example"]);
    await ok(["endpoint-cache", "set", "b.example", "exchanger:relay1"]);
    await ok(["endpoint-cache", "set", "*.c.example", "exchanger:relay1"]);
    await refused(["exchanger", "remove", "relay1"], 1,
      'exchanger "relay1" is the target of endpoint override "*.c.example", "b.example"; ' +
        "remove or change it first (`madmail endpoint-cache remove '*.c.example'`)");
    await ok(["endpoint-cache", "remove", "*.c.example"]);
    await ok(["endpoint-cache", "set", "b.example", "b-mx.example"]);
    await ok(["exchanger", "remove", "relay1"]);
  });
});

describe("token", () => {
  test("prints a new secret once; only its hash is stored; rotation replaces it", async () => {
    await ok(["exchanger", "add", "relay1", "https://relay1.example"]);
    const r = await sb.run(["exchanger", "token", "relay1"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^mmx_[A-Za-z0-9_-]{43}\n$/);
    expect(r.stderr).toBe("Token for exchanger relay1 stored as a hash: it cannot be shown again. Any previous token no longer works.\n");
    const secret = r.stdout.trim();
    expect((await one("relay1")).has_token).toBe(true);
    expect(dumpDb(sb.db)).toContain(createHash("sha256").update(secret).digest("hex"));
    // The secret itself is in no file of the data directory (db, WAL, shm).
    for (const f of readdirSync(dirname(sb.db))) expect(readFileSync(join(dirname(sb.db), f)).includes(secret)).toBe(false);

    const again = await sb.run(["exchanger", "token", "relay1", "--quiet"]);
    expect(again.stderr).toBe("");
    const second = again.stdout.trim();
    expect(second).not.toBe(secret);
    const dump = dumpDb(sb.db);
    expect(dump).toContain(createHash("sha256").update(second).digest("hex"));
    expect(dump).not.toContain(createHash("sha256").update(secret).digest("hex"));
  });
});

test("a local domain in --domains is stored as asked, with a warning that its mail never goes through the exchanger", async () => {
  await ok(["init", "--domain", "chat.test", "--quiet"]);
  const warning = "madmail: warning: chat.test is a local domain; its mail is delivered here and never goes through an exchanger\n";
  expect(await sb.run(["exchanger", "add", "hub", "https://hub.test", "--domains", "b.test,chat.test"])).toEqual({ code: 0, stdout: "Exchanger added: hub -> https://hub.test\n", stderr: warning });
  expect(await sb.run(["exchanger", "set", "hub", "--domains", "Chat.Test."])).toEqual({ code: 0, stdout: "Exchanger updated: hub\n", stderr: warning });
  expect((await one("hub")).domains).toEqual(["chat.test"]);
  expect((await sb.run(["exchanger", "set", "hub", "--domains", "b.test"])).stderr).toBe("");
});
