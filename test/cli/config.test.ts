// madmail config list | get KEY | set KEY VALUE | unset KEY over the typed settings registry.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { hostname } from "node:os";
import { Database } from "bun:sqlite";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";

let sb: Sandbox;
beforeEach(async () => {
  sb = sandbox();
  expect((await sb.run(["init"])).code).toBe(0);
});
afterEach(() => sb.cleanup());

const ok = async (args: string[]) => {
  const r = await sb.run(args);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
  return r.stdout;
};
const getJson = async (key: string) => JSON.parse(await ok(["config", "get", key, "--json"]));
/** Must be refused with exit 2 and exactly this message, leaving the state file as it was. */
const refused = async (args: string[], message: string) => {
  const before = dumpDb(sb.db);
  const r = await sb.run(args);
  expect({ args, ...r }).toEqual({ args, code: 2, stdout: "", stderr: `madmail: ${message}\n` });
  expect(dumpDb(sb.db)).toBe(before);
};

/** The keys the foundation promises, with their defaults. */
const DEFAULTS: Record<string, string> = {
  "listen.http": "127.0.0.1:8080",
  "listen.smtp": "127.0.0.1:2525",
  "listen.submission": "127.0.0.1:2587",
  "listen.submissions": "off",
  "listen.lmtp": "127.0.0.1:8024",
  "limits.max_message_size": "30M",
  "federation.policy": "accept",
  "log.format": "human",
  "hostname": hostname(),
};

describe("list and get", () => {
  test("list --json: every key with value, default and whether it is the default", async () => {
    const rows = JSON.parse(await ok(["config", "list", "--json"]));
    for (const row of rows) {
      expect(Object.keys(row)).toEqual(["key", "value", "default", "is_default", "type", "description"]);
      expect(row).toMatchObject({ value: row.default, is_default: true });
      expect(row.description.length).toBeGreaterThan(10);
    }
    const byKey = Object.fromEntries(rows.map((r: { key: string; value: string }) => [r.key, r.value]));
    expect(byKey).toMatchObject(DEFAULTS);
    expect(new Set(rows.map((r: { key: string }) => r.key)).size).toBe(rows.length);
  });

  test("list table marks set values; empty values show as \"\"", async () => {
    await ok(["config", "set", "listen.http", "0.0.0.0:80"]);
    const lines = (await ok(["config", "list"])).trimEnd().split("\n");
    expect(lines[0]).toMatch(/^KEY +VALUE +SOURCE +DESCRIPTION$/);
    const col = lines[0]!.indexOf("VALUE");
    const line = (key: string) => lines.find((l) => l.startsWith(`${key} `))!;
    expect(line("listen.http").slice(col)).toMatch(/^0\.0\.0\.0:80 +set +HTTP listener/);
    expect(line("listen.smtp").slice(col)).toMatch(/^127\.0\.0\.1:2525 +default +SMTP MX listener/);
    expect(line("tls.cert").slice(col)).toMatch(/^"" +default /);
    expect(lines).toHaveLength(JSON.parse(await ok(["config", "list", "--json"])).length + 1);
  });

  test("get prints the bare value; --json one object", async () => {
    expect(await ok(["config", "get", "listen.http"])).toBe("127.0.0.1:8080\n");
    expect(await getJson("listen.http")).toEqual({
      key: "listen.http",
      value: "127.0.0.1:8080",
      default: "127.0.0.1:8080",
      is_default: true,
      type: "listen",
      description: "HTTP listener: POST /mxdeliv, /healthz, the exchanger pull endpoint",
    });
  });
});

describe("set and unset", () => {
  test.each([
    ["listen.http", "0.0.0.0:9000", "0.0.0.0:9000"],
    ["listen.smtp", "OFF", "off"],
    ["listen.lmtp", "[::1]:24", "[::1]:24"],
    ["listen.submission", " 127.0.0.1:587 ", "127.0.0.1:587"],
    ["limits.max_message_size", "50m", "50M"],
    ["limits.max_message_size", "1048576", "1M"],
    ["limits.max_message_size", "1.5G", "1536M"],
    ["quota.default", "100000", "100000"],
    ["mxdeliv.dedup_window", "120", "2m"],
    ["mxdeliv.dedup_window", "7d", "1w"],
    ["federation.policy", "REJECT", "reject"],
    ["gate.passthrough_senders", " A@B.org , @c.org ", "a@b.org,@c.org"],
    // As the gate compares them: a trailing dot, a Unicode name or brackets would never match.
    ["gate.passthrough_recipients", "@Example.ORG.,bob@bücher.example,@[10.0.0.1]", "@example.org,bob@xn--bcher-kva.example,@10.0.0.1"],
    ["listen.smtp", "*:25", "0.0.0.0:25"],
    ["listen.smtp", "LocalHost:0025", "localhost:25"],
    ["listen.smtp", "[::1]:25", "[::1]:25"],
    ["mail.uid", "1000", "1000"],
    ["tls.cert", "/etc/ssl/madmail.pem", "/etc/ssl/madmail.pem"],
    ["log.format", "json", "json"],
  ])("set %s %p stores %p", async (key, value, stored) => {
    // Keys serve reads only at start say so on the same line.
    const atStart = /^(listen\.|mail_root$|mail\.[ug]id$|log\.format$)/.test(key) ? " (read when serve starts: restart it to apply)" : "";
    expect(await ok(["config", "set", key, value])).toBe(`${key} = ${stored}${atStart}\n`);
    expect(await getJson(key)).toMatchObject({ key, value: stored, is_default: false });
    expect(await ok(["config", "get", key])).toBe(`${stored}\n`);
  });

  test("unset returns to the default (also when it was not set)", async () => {
    await ok(["config", "set", "listen.http", "0.0.0.0:9000"]);
    expect(await ok(["config", "unset", "listen.http"])).toBe("listen.http = 127.0.0.1:8080 (default; read when serve starts: restart it to apply)\n");
    expect(await getJson("listen.http")).toMatchObject({ value: "127.0.0.1:8080", is_default: true });
    expect(await ok(["config", "unset", "listen.http"])).toBe("listen.http = 127.0.0.1:8080 (default; read when serve starts: restart it to apply)\n");
    expect(await ok(["config", "unset", "queue.lifetime"])).toBe("queue.lifetime = 5d (default)\n");
    expect(await ok(["config", "set", "listen.http", "off", "--quiet"])).toBe("");
  });
});

describe("refusals: exit 2, the key and the expected form named, nothing written", () => {
  const LISTEN = "expected HOST:PORT (e.g. 127.0.0.1:8080, [::1]:25, 0.0.0.0:25) or off";
  const SIZE = "expected a size in bytes with an optional K, M, G or T suffix (e.g. 500M, 1G)";
  const WINDOW = "expected a duration in seconds with an optional s, m, h, d or w suffix (e.g. 90s, 10m, 7d), at least 60s, at most 36500d";
  const ID = "expected a numeric id from 0 to 4294967294, or empty";
  const PATH = "expected an absolute file system path, or empty for the default";
  test.each([
    ["listen.http", "8080", `not HOST:PORT or off; ${LISTEN}`],
    ["listen.http", "", `not HOST:PORT or off; ${LISTEN}`],
    ["listen.http", "1.2.3.4:70000", `port 70000 is not between 1 and 65535; ${LISTEN}`],
    ["listen.http", "127.0.0.1:0", `port 0 is not between 1 and 65535; ${LISTEN}`],
    ["listen.http", "999.1.1.1:25", `999.1.1.1 is not an IPv4 address; ${LISTEN}`],
    ["listen.http", "a..b:80", `a..b is not a host name or IP address; ${LISTEN}`],
    ["listen.http", "[::::]:25", `[::::] is not an IPv6 address; ${LISTEN}`],
    ["gate.passthrough_senders", "user@foo..bar", '"user@foo..bar" is neither user@domain nor @domain; ' +
      "expected a comma-separated list of addresses (user@example.org) or domains (@example.org)"],
    ["listen.smtp", "host", `not HOST:PORT or off; ${LISTEN}`],
    ["limits.max_message_size", "0", `not a positive size; ${SIZE}`],
    ["limits.max_message_size", "10X", `not a positive size; ${SIZE}`],
    ["quota.default", "-1", `not a positive size; ${SIZE}`],
    ["mxdeliv.dedup_window", "59", `out of range; ${WINDOW}`],
    ["mxdeliv.dedup_window", "5y", `not a valid duration; ${WINDOW}`],
    ["federation.policy", "maybe", "not one of the choices; expected one of accept, reject"],
    ["log.format", "xml", "not one of the choices; expected one of human, json"],
    ["gate.passthrough_senders", "foo", '"foo" is neither user@domain nor @domain; ' +
      "expected a comma-separated list of addresses (user@example.org) or domains (@example.org)"],
    ["mail.uid", "abc", `not a numeric id; ${ID}`],
    ["mail.gid", "4294967295", `not a numeric id; ${ID}`],
    ["tls.cert", "relative.pem", `not an absolute path; ${PATH}`],
    ["mail_root", "./mail", `not an absolute path; ${PATH}`],
    ["queue.concurrency", "abc", "not a whole number; expected a whole number from 1 to 1000"],
    ["queue.concurrency", "1.5", "not a whole number; expected a whole number from 1 to 1000"],
    ["queue.concurrency", "0", "out of range; expected a whole number from 1 to 1000"],
    ["queue.per_destination", "101", "out of range; expected a whole number from 1 to 100"],
  ])("set %s %p", async (key, value, why) => {
    await ok(["config", "set", key === "listen.http" ? "listen.smtp" : "listen.http", "0.0.0.0:1"]);
    // A value such as -1 is a value, not an unknown flag.
    await refused(["config", "set", key, value], `invalid value "${value}" for ${key}: ${why}`);
  });

  test.each([
    [["config", "get", "nope"]],
    [["config", "get", "nope", "--json"]],
    [["config", "set", "nope", "1"]],
    [["config", "unset", "nope"]],
    [["config", "get", "LISTEN.HTTP"]],
  ])("unknown key: %p", async (args) => {
    const key = args[2]!;
    await refused(args, `unknown setting "${key}"; run \`madmail config list\` to see every key`);
  });

  // BUG (src/db/settings.ts, not fixed here): `hostname` says it expects "a host name" but
  // its parser takes any text. Remove `.failing` when the registry validates it.
  test("set hostname refuses what is not a host name", async () => {
    await refused(["config", "set", "hostname", "bad host!"], 'invalid value "bad host!" for hostname: not a host name; expected a host name such as mx.example.org');
  });
});

describe("the smarthost password and keys this madmail does not know", () => {
  const stored = (key: string) => {
    const db = new Database(sb.db, { readonly: true });
    try {
      return (db.query("select value from settings where key = ?").get(key) as { value: string } | null)?.value;
    } finally {
      db.close();
    }
  };

  test("the password is stored byte for byte (spaces at either end are part of it); empty standard input is refused", async () => {
    await ok(["config", "set", "relay.smarthost_password", "  sp ace  "]);
    expect(stored("relay.smarthost_password")).toBe("  sp ace  ");
    const r = await sb.run(["config", "set", "relay.smarthost_password", "-"], { stdin: " pw with spaces \n" });
    expect(r.code).toBe(0);
    expect(stored("relay.smarthost_password")).toBe(" pw with spaces ");
    const before = dumpDb(sb.db);
    const e = await sb.run(["config", "set", "relay.smarthost_password", "-"], { stdin: "" });
    expect(e).toEqual({ code: 2, stdout: "", stderr: "madmail: nothing on standard input for relay.smarthost_password; to return it to its default: madmail config unset relay.smarthost_password\n" });
    expect(dumpDb(sb.db)).toBe(before);
  });

  test("a stored key of another version: list warns of it, unset removes it", async () => {
    const db = new Database(sb.db);
    db.run("insert into settings (key, value) values ('old.key', '1')");
    db.close();
    const r = await sb.run(["config", "list", "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).some((v: { key: string }) => v.key === "old.key")).toBe(false);
    expect(r.stderr).toBe('madmail: warning: the state file holds "old.key", which is not a setting of this madmail and has no effect; remove it with `madmail config unset old.key`\n');
    expect(await ok(["config", "unset", "old.key"])).toBe("old.key removed (not a setting of this madmail)\n");
    expect(stored("old.key")).toBeUndefined();
    expect((await sb.run(["config", "list"])).stderr).toBe("");
  });
});
