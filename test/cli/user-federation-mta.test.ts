import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";

let box: Sandbox;
beforeEach(async () => {
  box = sandbox();
  expect((await box.run(["init", "--domain", "chat.test"])).code).toBe(0);
});
afterEach(() => box.cleanup());

describe("madmail user", () => {
  test("add with password from stdin, quota, list (table and json), remove", async () => {
    let r = await box.run(["user", "add", "Alice@Chat.Test", "--password-stdin", "--quota", "500M"], { stdin: "s3cret\n" });
    expect(r).toMatchObject({ code: 0, stdout: "User added: alice@chat.test\n" });
    r = await box.run(["user", "add", "bob@chat.test"]);
    expect(r.code).toBe(0);
    r = await box.run(["user", "list", "--json"]);
    const users = JSON.parse(r.stdout);
    expect(users).toEqual([
      { address: "alice@chat.test", quota_bytes: 500 * 1024 * 1024, quota_is_default: false, used_bytes: 0, has_password: true, created_at: expect.any(String) },
      { address: "bob@chat.test", quota_bytes: 1024 ** 3, quota_is_default: true, used_bytes: 0, has_password: false, created_at: expect.any(String) },
    ]);
    r = await box.run(["user", "list"]);
    expect(r.stdout.split("\n")[0]).toMatch(/^ADDRESS\s+QUOTA\s+USED\s+PASSWORD\s+CREATED AT$/);
    expect(r.stdout).toContain("alice@chat.test  500M");
    // Only a hash of the password is stored.
    expect(dumpDb(box.db)).not.toContain("s3cret");
    expect(dumpDb(box.db)).toContain("scrypt$");
    expect((await box.run(["user", "quota", "bob@chat.test", "2G"])).stdout).toBe("Quota of bob@chat.test: 2G\n");
    expect((await box.run(["user", "remove", "bob@chat.test"])).code).toBe(0);
    expect(JSON.parse((await box.run(["user", "list", "--json"])).stdout).length).toBe(1);
  });

  test("adding an address whose Maildir holds a removed user's mail warns; a plain dot-atom with UTF-8 and !#$%&'*+-=?^_`{|}~ is fine", async () => {
    const maildir = join(box.dir, "data", "mail", "bob@chat.test");
    for (const sub of ["new", "cur", "tmp"]) mkdirSync(join(maildir, sub), { recursive: true });
    writeFileSync(join(maildir, "new", "1.M1P1.h,S=1"), "x");
    writeFileSync(join(maildir, "cur", "2.M2P2.h,S=1:2,S"), "y");
    const r = await box.run(["user", "add", "bob@chat.test"]);
    expect(r).toEqual({ code: 0, stdout: "User added: bob@chat.test\n",
      stderr: `madmail: warning: ${maildir} already holds 2 messages (left by a removed user?): bob@chat.test gets them over IMAP; move the directory away if it should not. The quota counts them from serve's next recount (within 10 minutes).\n` });
    expect(await box.run(["user", "add", "o'neil+chat!#$%&*=?^_`{|}~-x.y@chat.test"])).toMatchObject({ code: 0, stderr: "" });
    expect(await box.run(["user", "add", "jürgen@chat.test"])).toMatchObject({ code: 0, stderr: "" });
  });

  test("user@[1.2.3.4] and user@1.2.3.4 are one address", async () => {
    await box.run(["domain", "add", "[10.0.0.1]"]);
    expect((await box.run(["user", "add", "u@[10.0.0.1]"])).code).toBe(0);
    const r = await box.run(["user", "add", "U@10.0.0.1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("already exists");
  });

  test.each([
    [["user", "add", "not-an-address"], 2, "invalid address"],
    [["user", "add", "x@foreign.test"], 2, 'not a local domain'],
    [["user", "add", "postmaster@chat.test"], 2, "reserved local part"],
    // The part before @ names the Maildir directory: the store would refuse it at every delivery.
    ...["a/b@chat.test", "../../etc@chat.test", "a@b@chat.test", ".bob@chat.test", "bob.@chat.test", "a..b@chat.test", "ctl\u0001x@chat.test"]
      .map((a) => [["user", "add", a], 2, 'the part before @ must be dot-separated words without "/"'] as const),
    [["user", "add", "x@chat.test", "--quota", "lots"], 2, "invalid quota"],
    [["user", "add", "x@chat.test", "--password-stdin"], 2, "empty password"],
    [["user", "remove", "ghost@chat.test"], 1, "no user ghost@chat.test"],
    [["user", "quota", "ghost@chat.test", "1G"], 1, "no user"],
    [["user", "quota", "ghost@chat.test", "-5"], 2, "invalid quota"],
  ])("%p -> exit %d, nothing changed", async (args, code, message) => {
    const before = dumpDb(box.db);
    const r = await box.run(args as string[], { stdin: "" });
    expect(r.code).toBe(code as number);
    expect(r.stderr).toContain(message as string);
    expect(dumpDb(box.db)).toBe(before);
  });
});

describe("madmail federation", () => {
  test("policy, block, allow, dismiss, list --json, remove", async () => {
    expect((await box.run(["federation", "policy"])).stdout).toContain("accept");
    expect((await box.run(["federation", "block", "Evil.Test."])).stdout).toBe("Blocked: evil.test\n");
    expect((await box.run(["federation", "allow", "friend.test"])).code).toBe(0);
    expect((await box.run(["federation", "dismiss", "noisy.test"])).code).toBe(0);
    expect((await box.run(["federation", "policy", "reject"])).stdout).toBe("Federation policy: reject\n");
    const list = JSON.parse((await box.run(["federation", "list", "--json"])).stdout);
    expect(list.mode).toBe("reject");
    expect(list.rules.map((r: { domain: string; kind: string }) => `${r.kind}:${r.domain}`)).toEqual(["block:evil.test", "allow:friend.test", "dismiss:noisy.test"]);
    expect((await box.run(["federation", "remove", "evil.test"])).code).toBe(0);
    const r = await box.run(["federation", "remove", "evil.test"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no block/allow rule for "evil.test"');
    expect((await box.run(["federation", "undismiss", "noisy.test"])).code).toBe(0);
  });

  test("bad input changes nothing", async () => {
    const before = dumpDb(box.db);
    for (const args of [["federation", "policy", "maybe"], ["federation", "block", "not a domain"], ["federation", "allow"]]) {
      const r = await box.run(args);
      expect(r.code).toBe(2);
    }
    expect(dumpDb(box.db)).toBe(before);
  });
});

describe("madmail mta postfix-maps", () => {
  test("prints transport and relay_domains lines for the local domains", async () => {
    await box.run(["domain", "add", "b.test"]);
    expect((await box.run(["mta", "postfix-maps"])).stdout).toBe("b.test lmtp:[127.0.0.1]:8024\nchat.test lmtp:[127.0.0.1]:8024\n");
    await box.run(["config", "set", "listen.lmtp", "127.0.0.1:9024"]);
    expect((await box.run(["mta", "postfix-maps"])).stdout).toBe("b.test lmtp:[127.0.0.1]:9024\nchat.test lmtp:[127.0.0.1]:9024\n");
    expect((await box.run(["mta", "postfix-maps", "--kind", "relay-domains"])).stdout).toBe("b.test b.test\nchat.test chat.test\n");
  });
});
