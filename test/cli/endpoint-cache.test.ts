// madmail endpoint-cache (alias dns-cache): endpoint rewrites in table dns_overrides.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";

let sb: Sandbox;
beforeEach(async () => {
  sb = sandbox();
  expect((await sb.run(["exchanger", "add", "relay1", "https://relay1.example"])).code).toBe(0);
});
afterEach(() => sb.cleanup());

const TIME = /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
/** Same width as a table time, so that column alignment is still checked. */
const maskTimes = (s: string) => s.replace(TIME, "YYYY-MM-DD hh:mm:ss");
const ok = async (args: string[]) => {
  const r = await sb.run(args);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
  return r.stdout;
};
const getJson = async (key: string) => JSON.parse(await ok(["endpoint-cache", "get", key, "--json"]));

describe("set normalises keys and targets", () => {
  test.each([
    ["a.com", "b.com", "a.com", "b.com"],
    ["A.Com.", "B.COM.", "a.com", "b.com"],
    ["[1.2.3.4]", "10.0.0.1", "1.2.3.4", "10.0.0.1"],
    ["1.2.3.4", "[10.0.0.1]", "1.2.3.4", "10.0.0.1"],
    ["2001:DB8:0::1", "2001:db8::2", "2001:db8::1", "[2001:db8::2]"],
    ["[IPv6:2001:db8::1]", "[2001:DB8::2]:2525", "2001:db8::1", "[2001:db8::2]:2525"],
    ["*.Example.ORG", "b.com:8443", "*.example.org", "b.com:8443"],
    ["a.com", "1.2.3.4:25", "a.com", "1.2.3.4:25"],
    ["a.com", "https://b.com", "a.com", "https://b.com/mxdeliv"],
    ["a.com", "http://B.com:8080/", "a.com", "http://b.com:8080/mxdeliv"],
    ["a.com", "https://b.com/custom/path", "a.com", "https://b.com/custom/path"],
    ["a.com", "https://[2001:db8::9]:8443", "a.com", "https://[2001:db8::9]:8443/mxdeliv"],
    ["a.com", "exchanger:relay1", "a.com", "exchanger:relay1"],
  ])("set %s %s -> %s → %s", async (key, target, nkey, ntarget) => {
    expect(await ok(["endpoint-cache", "set", key, target])).toBe(`Successfully set endpoint override: ${nkey} → ${ntarget}\n`);
    const row = await getJson(key);
    expect(row).toMatchObject({ lookup_key: nkey, target_host: ntarget, comment: null });
    // Any spelling of the key finds the same row.
    expect(await getJson(nkey)).toEqual(row);
  });

  test("[1.2.3.4] and 1.2.3.4 are one key", async () => {
    await ok(["endpoint-cache", "set", "[1.2.3.4]", "a.example"]);
    await ok(["endpoint-cache", "set", "1.2.3.4", "b.example"]);
    const rows = JSON.parse(await ok(["endpoint-cache", "list", "--json"]));
    expect(rows.map((r: { lookup_key: string; target_host: string }) => [r.lookup_key, r.target_host])).toEqual([["1.2.3.4", "b.example"]]);
    expect(await ok(["endpoint-cache", "remove", "[1.2.3.4]"])).toBe("Removed endpoint override: 1.2.3.4\n");
  });
});

describe("bad input exits 2, says what is allowed, writes nothing", () => {
  const FORMS = "expected a host name (b.example), an IP (1.2.3.4, [2001:db8::1]), host:port (b.example:8443), " +
    "an http(s) URL (https://b.example/mxdeliv; path defaults to /mxdeliv) or exchanger:NAME";
  test.each([
    "ftp://b.com", "b.com:99999", "b.com:0", "b.com:", "b_c.com", "a b", "", "https://user:pw@b.com", "https://b.com/?x=1",
    "https://b.com/#frag", "exchanger:", "exchanger:Relay!", "mailto:x@b.com", "1.2.3", "-b.com",
    // the URL parser would make other hosts of these, or port 0 of the last
    "http://10.1.5", "http://2130706433/mxdeliv", "http://0x7f.1/", "http://127.0.0.1:0",
  ])("target %p", async (target) => {
    await ok(["endpoint-cache", "set", "keep.com", "old.com", "--comment", "keep"]);
    const before = dumpDb(sb.db);
    const r = await sb.run(["endpoint-cache", "set", "--", "keep.com", target]);
    expect(r).toEqual({ code: 2, stdout: "", stderr: `madmail: invalid target "${target}": ${FORMS}\n` });
    expect(dumpDb(sb.db)).toBe(before);
  });

  test.each(["bad_key", "*.", "*", "a.*.com", "**.a.com", "http://a.com", "-a.com", "1.2.3", "a..com", ""])("key %p", async (key) => {
    const before = dumpDb(sb.db);
    // `--` ends the options, so that "-a.com" reaches the key check.
    for (const args of [["set", "--", key, "b.com"], ["get", "--", key], ["remove", "--", key]]) {
      const r = await sb.run(["endpoint-cache", ...args]);
      expect(r).toEqual({
        code: 2,
        stdout: "",
        stderr: `madmail: invalid lookup key "${key}": expected a domain (a.example), a wildcard (*.a.example) or an IP literal (1.2.3.4, [2001:db8::1])\n`,
      });
    }
    expect(dumpDb(sb.db)).toBe(before);
  });

  test("exchanger:NAME must name an existing exchanger", async () => {
    const before = dumpDb(sb.db);
    const r = await sb.run(["endpoint-cache", "set", "a.com", "exchanger:nope"]);
    expect(r).toEqual({ code: 1, stdout: "", stderr: 'madmail: no exchanger named "nope"; add it first with `madmail exchanger add nope URL`\n' });
    expect(dumpDb(sb.db)).toBe(before);
  });
});

describe("list, get, remove", () => {
  test("empty list", async () => {
    expect(await ok(["endpoint-cache", "list"])).toBe("No endpoint override entries.\n");
    expect(await ok(["endpoint-cache", "list", "--json"])).toBe("[]\n");
  });

  test("list prints an aligned table sorted by key", async () => {
    await ok(["endpoint-cache", "set", "zz.example", "https://relay.example", "--comment", "moved to relay"]);
    await ok(["dns-cache", "set", "a.com", "b.com"]);
    await ok(["endpoint-cache", "set", "*.example.org", "exchanger:relay1", "--comment", "hub"]);
    expect(maskTimes(await ok(["endpoint-cache", "list"]))).toBe([
      "LOOKUP KEY     TARGET                         COMMENT         CREATED AT           UPDATED AT",
      "*.example.org  exchanger:relay1               hub             YYYY-MM-DD hh:mm:ss  YYYY-MM-DD hh:mm:ss",
      "a.com          b.com                                          YYYY-MM-DD hh:mm:ss  YYYY-MM-DD hh:mm:ss",
      "zz.example     https://relay.example/mxdeliv  moved to relay  YYYY-MM-DD hh:mm:ss  YYYY-MM-DD hh:mm:ss",
      "",
    ].join("\n"));
    expect(await ok(["dns-cache", "list"])).toBe(await ok(["endpoint-cache", "list"]));
  });

  test("--json shapes: list is an array, get one object, snake_case, ISO times", async () => {
    await ok(["endpoint-cache", "set", "a.com", "b.com", "--comment", "why"]);
    const list = JSON.parse(await ok(["endpoint-cache", "list", "--json"]));
    expect(list).toHaveLength(1);
    const one = await getJson("a.com");
    expect(list[0]).toEqual(one);
    expect(Object.keys(one)).toEqual(["lookup_key", "target_host", "comment", "created_at", "updated_at"]);
    expect(one).toMatchObject({ lookup_key: "a.com", target_host: "b.com", comment: "why" });
    expect(one.created_at).toMatch(ISO);
    expect(one.updated_at).toBe(one.created_at);
  });

  test("get prints the table row", async () => {
    await ok(["endpoint-cache", "set", "a.com", "b.com", "--comment", "c"]);
    expect(maskTimes(await ok(["endpoint-cache", "get", "A.COM."]))).toBe(
      "LOOKUP KEY  TARGET  COMMENT  CREATED AT           UPDATED AT\n" +
      "a.com       b.com   c        YYYY-MM-DD hh:mm:ss  YYYY-MM-DD hh:mm:ss\n",
    );
  });

  test("set on an existing key updates target, comment and updated_at, keeps created_at", async () => {
    await ok(["endpoint-cache", "set", "a.com", "b.com", "--comment", "first"]);
    const first = await getJson("a.com");
    await Bun.sleep(5);
    expect(await ok(["endpoint-cache", "set", "a.com", "c.com:2525", "--comment", "second"])).toBe("Successfully set endpoint override: a.com → c.com:2525\n");
    const second = await getJson("a.com");
    expect(second).toMatchObject({ target_host: "c.com:2525", comment: "second", created_at: first.created_at });
    expect(Date.parse(second.updated_at)).toBeGreaterThan(Date.parse(first.updated_at));
    // Without --comment the comment is cleared: set states the whole entry.
    await ok(["endpoint-cache", "set", "a.com", "d.com"]);
    expect((await getJson("a.com")).comment).toBeNull();
  });

  test.each([["get"], ["remove"]])("%s of a missing key exits 1 and writes nothing", async (verb) => {
    await ok(["endpoint-cache", "set", "a.com", "b.com"]);
    const before = dumpDb(sb.db);
    for (const extra of verb === "get" ? [[], ["--json"]] : [[]]) {
      const r = await sb.run(["endpoint-cache", verb, "Missing.Example.", ...extra]);
      expect(r).toEqual({ code: 1, stdout: "", stderr: 'madmail: no endpoint override found for "missing.example"\n' });
    }
    expect(dumpDb(sb.db)).toBe(before);
  });

  test("remove deletes the row; --quiet prints nothing", async () => {
    await ok(["endpoint-cache", "set", "a.com", "b.com"]);
    await ok(["endpoint-cache", "set", "c.com", "d.com"]);
    expect(await ok(["dns-cache", "remove", "a.com"])).toBe("Removed endpoint override: a.com\n");
    expect(await ok(["endpoint-cache", "remove", "c.com", "--quiet"])).toBe("");
    expect(await ok(["endpoint-cache", "list"])).toBe("No endpoint override entries.\n");
  });
});
