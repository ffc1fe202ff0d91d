import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createStorage, type Storage } from "unstorage";
import memoryDriver from "unstorage/drivers/memory";
import { createMailboxStore, createMaildirStore, type MailboxStore } from "../../src/store/mailbox-store.ts";
import maildirDriver, { DRIVER_NAME, TMP_LEFTOVER_AGE_MS } from "../../src/store/maildir-driver.ts";
import { encodeKeySegment } from "../../src/store/maildir-names.ts";
import { BAD_ADDRESSES, bytes, testMailboxStore, text, UNIQUE_NAME } from "./_store-suite.ts";

const tmpDirs: string[] = [];
function tempRoot(): string {
  const dir = mkdtempSync(join(tmpdir(), "madmail-store-"));
  tmpDirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of tmpDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

testMailboxStore("memory", () => {
  const storage = createStorage({ driver: memoryDriver() });
  return { store: createMailboxStore(storage), storage };
});

testMailboxStore("maildir", () => {
  const storage = createStorage({ driver: maildirDriver({ base: join(tempRoot(), "mail") }) });
  return { store: createMailboxStore(storage), storage };
});

// ---------------------------------------------------------------------------------------------

describe("maildir on disk", () => {
  let parent: string;
  let root: string;
  let store: MailboxStore;
  beforeEach(() => {
    parent = tempRoot();
    root = join(parent, "mail");
    store = createMaildirStore({ root });
  });
  afterEach(() => store.dispose());

  const ls = (...p: string[]) => readdirSync(join(root, ...p)).sort();

  test("a delivery is a file in <root>/<address>/new named with S=<size>, exact bytes, tmp/ empty", async () => {
    const body = bytes("From: a@b\r\nSubject: hi\r\n\r\nhello\r\n");
    const id = await store.deliver("bob@chat.example", body);
    expect(ls()).toEqual(["bob@chat.example"]);
    expect(ls("bob@chat.example")).toEqual(["cur", "new", "tmp"]);
    expect(ls("bob@chat.example", "new")).toEqual([id]);
    expect(id).toMatch(UNIQUE_NAME);
    expect(id).toEndWith(`,S=${body.byteLength}`);
    expect(new Uint8Array(readFileSync(join(root, "bob@chat.example", "new", id)))).toEqual(body);
    expect(ls("bob@chat.example", "tmp")).toEqual([]);
    expect(ls("bob@chat.example", "cur")).toEqual([]);
  });

  test("directories are 0700 and files 0600, the mail root included", async () => {
    const id = await store.deliver("bob@chat.example", bytes("x"));
    for (const d of [root, join(root, "bob@chat.example"), ...["tmp", "new", "cur"].map((s) => join(root, "bob@chat.example", s))]) {
      expect((statSync(d).mode & 0o777).toString(8)).toBe("700");
    }
    expect((statSync(join(root, "bob@chat.example", "new", id)).mode & 0o777).toString(8)).toBe("600");
  });

  test("2,000 concurrent deliveries to one address: all land in new/, all names distinct, tmp/ empty", async () => {
    const ids = await Promise.all(Array.from({ length: 2000 }, (_, i) => store.deliver("bob@chat.example", bytes(`message ${i}\r\n`))));
    expect(new Set(ids).size).toBe(2000);
    expect(ls("bob@chat.example", "new")).toEqual([...ids].sort());
    expect(ls("bob@chat.example", "tmp")).toEqual([]);
    expect(readFileSync(join(root, "bob@chat.example", "new", ids[1234]!), "utf8")).toBe("message 1234\r\n");
  });

  test("names stay unique across two stores in one process", async () => {
    const other = createMaildirStore({ root });
    const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? store : other).deliver("bob@chat.example", bytes("x"))));
    await other.dispose();
    expect(new Set(ids).size).toBe(200);
    expect(ls("bob@chat.example", "new")).toHaveLength(200);
  });

  test.each([
    ["bob@1.2.3.4", "bob@1.2.3.4"],
    ["bob@2001:db8::1", "bob@2001:db8::1"],
  ])("IP literal address %p is the directory %p", async (address, dir) => {
    const id = await store.deliver(address, bytes("hi"));
    expect(ls()).toEqual([dir]);
    expect(ls(dir, "new")).toEqual([id]);
  });

  test.each(BAD_ADDRESSES)("address %p creates nothing anywhere", async (address) => {
    await expect(store.deliver(address, bytes("x"))).rejects.toThrow();
    expect(readdirSync(parent)).toEqual([]);
  });

  test("a Maildir removed by hand is made again on the next delivery", async () => {
    await store.deliver("bob@chat.example", bytes("1"));
    rmSync(join(root, "bob@chat.example"), { recursive: true });
    const id = await store.deliver("bob@chat.example", bytes("2"));
    expect(ls("bob@chat.example", "new")).toEqual([id]);
  });

  test("an existing Maildir (made by Dovecot) is used as it is, its other files untouched", async () => {
    for (const s of ["tmp", "new", "cur"]) mkdirSync(join(root, "bob@chat.example", s), { recursive: true });
    writeFileSync(join(root, "bob@chat.example", "dovecot-uidlist"), "3 V1 N1\n");
    writeFileSync(join(root, "bob@chat.example", "cur", "1.M1P1Q1.h,S=3:2,S"), "old");
    const id = await store.deliver("bob@chat.example", bytes("new"));
    expect((await store.list("bob@chat.example")).sort()).toEqual(["1.M1P1Q1.h,S=3", id].sort());
    expect(text(await store.read("bob@chat.example", "1.M1P1Q1.h,S=3"))).toBe("old");
    expect(readFileSync(join(root, "bob@chat.example", "dovecot-uidlist"), "utf8")).toBe("3 V1 N1\n");
  });

  test("files left in tmp/ for over 36 hours (a crash before the rename) are removed; newer ones and directories stay", async () => {
    const tmp = join(root, "bob@chat.example", "tmp");
    for (const s of ["tmp", "new", "cur"]) mkdirSync(join(root, "bob@chat.example", s), { recursive: true });
    const old = (Date.now() - TMP_LEFTOVER_AGE_MS - 60_000) / 1000;
    const recent = (Date.now() - TMP_LEFTOVER_AGE_MS + 3600_000) / 1000;
    writeFileSync(join(tmp, "old"), "x");
    utimesSync(join(tmp, "old"), old, old);
    writeFileSync(join(tmp, "recent"), "x");
    utimesSync(join(tmp, "recent"), recent, recent);
    mkdirSync(join(tmp, "olddir"));
    utimesSync(join(tmp, "olddir"), old, old);
    await store.deliver("bob@chat.example", bytes("new"));
    await store.dispose(); // waits for the clean-up
    expect(ls("bob@chat.example", "tmp")).toEqual(["olddir", "recent"]);
  });

  test("3,000 concurrent deliveries succeed under a 256 file descriptor limit (no EMFILE)", async () => {
    const script = `
      import { createMaildirStore } from ${JSON.stringify(join(import.meta.dir, "../../src/store/mailbox-store.ts"))};
      const store = createMaildirStore({ root: ${JSON.stringify(root)} });
      const r = await Promise.allSettled(Array.from({ length: 3000 }, (_, i) => store.deliver("u" + (i % 50) + "@x", new Uint8Array(512))));
      await store.dispose();
      console.log(JSON.stringify(r.filter((x) => x.status === "rejected").map((x) => String(x.reason)).slice(0, 3)));`;
    const proc = Bun.spawnSync(["bash", "-c", 'ulimit -n 256 && exec "$0" -e "$1"', process.execPath, script]);
    expect(proc.stderr.toString()).toBe("");
    expect(proc.stdout.toString().trim()).toBe("[]");
    const files = ls().reduce((n, a) => n + ls(a, "new").length, 0);
    expect(files).toBe(3000);
  });

  test("dispose() waits for deliveries in flight; later deliveries are refused", async () => {
    const inFlight = Array.from({ length: 50 }, (_, i) => store.deliver("bob@chat.example", bytes(`m${i}`)));
    await store.dispose();
    const ids = await Promise.all(inFlight);
    expect(ls("bob@chat.example", "new")).toEqual([...ids].sort());
    await expect(store.deliver("bob@chat.example", bytes("late"))).rejects.toThrow(/disposed/);
  });
});

// ---------------------------------------------------------------------------------------------

const nobody = (() => {
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith("nobody:"));
  const [, , uid, gid] = line?.split(":") ?? [];
  return uid && gid ? { uid: Number(uid), gid: Number(gid) } : null;
})();
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot || !nobody)("maildir ownership (needs root)", () => {
  test("uid/gid are applied to the created root, Maildir directories and files", async () => {
    const root = join(tempRoot(), "mail");
    const store = createMaildirStore({ root, uid: nobody!.uid, gid: nobody!.gid });
    const id = await store.deliver("bob@chat.example", bytes("x"));
    await store.dispose();
    const paths = [root, join(root, "bob@chat.example"), ...["tmp", "new", "cur"].map((s) => join(root, "bob@chat.example", s)), join(root, "bob@chat.example", "new", id)];
    for (const p of paths) {
      const st = statSync(p);
      expect({ path: p, uid: st.uid, gid: st.gid }).toEqual({ path: p, uid: nobody!.uid, gid: nobody!.gid });
    }
  });

  test("a pre-existing mail root keeps its owner; a Maildir left root-owned is handed over", async () => {
    const root = tempRoot();
    mkdirSync(join(root, "bob@chat.example", "new"), { recursive: true });
    const store = createMaildirStore({ root, uid: nobody!.uid, gid: nobody!.gid });
    await store.deliver("bob@chat.example", bytes("x"));
    await store.dispose();
    expect(statSync(root).uid).toBe(0);
    expect(statSync(join(root, "bob@chat.example")).uid).toBe(nobody!.uid);
    expect(statSync(join(root, "bob@chat.example", "new")).gid).toBe(nobody!.gid);
  });

  test("without uid/gid, files belong to the running user", async () => {
    const root = join(tempRoot(), "mail");
    const store = createMaildirStore({ root });
    const id = await store.deliver("bob@chat.example", bytes("x"));
    await store.dispose();
    expect(statSync(join(root, "bob@chat.example", "new", id)).uid).toBe(process.getuid!());
  });
});

// ---------------------------------------------------------------------------------------------

describe("maildir driver (unstorage contract)", () => {
  let parent: string;
  let base: string;
  let storage: Storage;
  beforeEach(() => {
    parent = tempRoot();
    base = join(parent, "mail");
    storage = createStorage({ driver: maildirDriver({ base }) });
  });
  afterEach(() => storage.dispose());

  test("options are checked at construction and exposed resolved", () => {
    expect(() => maildirDriver({} as never)).toThrow("[unstorage] [maildir] Missing required option `base`.");
    expect(() => maildirDriver({ base, uid: -1 })).toThrow(/Invalid option `uid`/);
    expect(() => maildirDriver({ base, gid: 1.5 })).toThrow(/Invalid option `gid`/);
    expect(() => maildirDriver({ base, maxOpenFiles: 0 })).toThrow(/Invalid option `maxOpenFiles`/);
    const d = maildirDriver({ base: "rel/dir", uid: 5 });
    expect(d.name).toBe(DRIVER_NAME);
    expect(d.options).toEqual({ base: join(process.cwd(), "rel/dir"), uid: 5, gid: null, maxOpenFiles: 128 } as never);
  });

  test("setItem/getItem, setItemRaw/getItemRaw, hasItem, getMeta (size, mtime), removeItem", async () => {
    const key = "bob@chat.example:new:1.M2P3Q4.host,S=5";
    expect(await storage.hasItem(key)).toBe(false);
    expect(await storage.getItemRaw(key)).toBeNull();
    await storage.setItem(key, "hello");
    expect(await storage.getItem(key)).toBe("hello");
    expect(readFileSync(join(base, "bob@chat.example", "new", "1.M2P3Q4.host,S=5"), "utf8")).toBe("hello");
    await storage.setItemRaw(key, bytes("HELLO"));
    expect(text(new Uint8Array((await storage.getItemRaw(key)) as Uint8Array))).toBe("HELLO");
    const meta = await storage.getMeta(key);
    expect(meta.size).toBe(5);
    expect(meta.mtime).toBeInstanceOf(Date);
    expect(Math.abs(Date.now() - meta.mtime!.getTime())).toBeLessThan(60_000);
    expect(await storage.hasItem(key)).toBe(true);
    await storage.removeItem(key, { removeMeta: true });
    expect(await storage.hasItem(key)).toBe(false);
    expect(await storage.getMeta(key)).toEqual({});
  });

  test("names with dots, commas, '=', case and a flags part survive as keys", async () => {
    const names = ["1700000000.M123456P42Q7.Mail.Example.ORG,S=3", "1.M1P1Q1.h\\057x,S=3,W=4:2,FS", "UPPER.lower"];
    await Promise.all(names.map((n) => storage.setItem(`bob@chat.example:cur:${encodeKeySegment(n)}`, "abc")));
    expect(readdirSync(join(base, "bob@chat.example", "cur")).sort()).toEqual([...names].sort());
    const keys = (await storage.getKeys("bob@chat.example:cur")).sort();
    expect(keys).toEqual(names.map((n) => `bob@chat.example:cur:${n.replace(/\\/g, "%5C").replace(/:/g, "%3A")}`).sort());
    expect(keys).toContain("bob@chat.example:cur:1700000000.M123456P42Q7.Mail.Example.ORG,S=3"); // as is
    for (const k of keys) expect(await storage.getItem(k)).toBe("abc");
    // Unencoded, unstorage itself would split the key at "\" (and at "/", and cut it at "?").
    await expect(storage.setItem("bob@chat.example:cur:1.M1P1Q1.h\\057x,S=3", "abc")).rejects.toThrow(/Invalid key/);
  });

  test("getKeys by prefix: all, one address, one subdirectory; tmp/ and stray files are not keys", async () => {
    await storage.setItem("a@x:new:1", "1");
    await storage.setItem("a@x:cur:2%3A2,S", "2");
    await storage.setItem("b@x:new:3", "3");
    writeFileSync(join(base, "a@x", "tmp", "in-progress"), "");
    writeFileSync(join(base, "a@x", "dovecot-uidlist"), "");
    writeFileSync(join(base, "stray-file"), "");
    expect((await storage.getKeys()).sort()).toEqual(["a@x:cur:2%3A2,S", "a@x:new:1", "b@x:new:3"]);
    expect((await storage.getKeys("a@x")).sort()).toEqual(["a@x:cur:2%3A2,S", "a@x:new:1"]);
    expect(await storage.getKeys("a@x:new")).toEqual(["a@x:new:1"]);
    expect(await storage.getKeys("a@x:tmp")).toEqual([]);
    expect(await storage.getKeys("nobody@x")).toEqual([]);
  });

  test("the driver's clear(prefix) removes that address's messages only", async () => {
    const driver = maildirDriver({ base });
    await driver.setItem!("a@x:new:1", "1", {});
    await driver.setItem!("a@x:cur:2", "2", {});
    await driver.setItem!("ab@x:new:3", "3", {});
    await driver.clear!("a@x:", {});
    expect(await driver.getKeys("", {})).toEqual(["ab@x:new:3"]);
    await driver.setItem!("a@x:new:4", "4", {});
    await driver.clear!("a@x:cur:", {});
    expect((await driver.getKeys("", {})).sort()).toEqual(["a@x:new:4", "ab@x:new:3"]);
    await driver.dispose!();
  });

  test("clear() with no prefix removes every message and keeps the directories", async () => {
    await storage.setItem("a@x:new:1", "1");
    await storage.setItem("b@x:cur:2", "2");
    await storage.clear();
    expect(await storage.getKeys()).toEqual([]);
    expect(readdirSync(join(base, "a@x")).sort()).toEqual(["cur", "new", "tmp"]);
  });

  test.each([
    "..:new:x",
    "%2E%2E:new:x",
    "..%2F..%2Fetc:new:passwd",
    "bob@x:new:..%2F..%2Fescape",
    "bob@x:new:%2E%2E",
    "bob@x:tmp:x",
    "bob@x:foo:x",
    "bob@x:new",
    "bob@x:new:a:b",
    "bob@x:new:a%00b",
    "bob@x:new:%41",
    "bob@x:new:50%",
  ])("key %p is refused for every operation and touches nothing", async (key) => {
    await expect(storage.setItem(key, "x")).rejects.toThrow();
    await expect(storage.setItemRaw(key, bytes("x"))).rejects.toThrow();
    await expect(storage.getItem(key)).rejects.toThrow();
    await expect(storage.hasItem(key)).rejects.toThrow();
    await expect(storage.removeItem(key)).rejects.toThrow();
    expect(readdirSync(parent)).toEqual([]);
  });

  test("the driver itself refuses traversal keys that unstorage's normalisation would pass on", async () => {
    const driver = maildirDriver({ base });
    for (const key of ["../../etc:new:x", "bob@x/../..:new:x", "bob@x:new:../../x", "bob@x:new:/etc/passwd"]) {
      await expect((async () => driver.setItemRaw!(key, bytes("x"), {}))()).rejects.toThrow(/Invalid key/);
      await expect((async () => driver.getItem(key))()).rejects.toThrow(/Invalid key/);
    }
    expect(readdirSync(parent)).toEqual([]);
  });

  test("metadata keys (<key>$) are absent and cannot be written", async () => {
    await storage.setItem("bob@x:new:1", "1");
    expect(await storage.getItem("bob@x:new:1$")).toBeNull();
    await expect(storage.setMeta("bob@x:new:1", { a: 1 })).rejects.toThrow(/metadata/);
  });
});
