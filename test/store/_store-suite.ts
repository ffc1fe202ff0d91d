// One conformance suite for every MailboxStore backend (memory driver, Maildir driver), in the
// manner of unstorage's testDriver: it uses only the public MailboxStore and Storage APIs.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { Storage } from "unstorage";
import type { MailboxStore } from "../../src/store/mailbox-store.ts";
import { parseMaildirKey } from "../../src/store/maildir-names.ts";

export interface StoreUnderTest {
  store: MailboxStore;
  /** The Storage the store runs on, for checks at the key level. */
  storage: Storage;
  cleanup?: () => void | Promise<void>;
}

export const bytes = (s: string) => new TextEncoder().encode(s);
export const text = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));

// A unique name with its size: `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>`.
export const UNIQUE_NAME = /^\d+\.M\d+P\d+Q\d+\.[^/:,]+,S=(\d+)$/;

export const BAD_ADDRESSES = ["", ".", "..", "../x", "x/..", "a/b", "/abs", "a\0b", "a\nb"];

export function testMailboxStore(name: string, create: () => StoreUnderTest | Promise<StoreUnderTest>, additionalTests?: (ctx: () => StoreUnderTest) => void): void {
  describe(`MailboxStore conformance: ${name}`, () => {
    let ctx: StoreUnderTest;
    beforeEach(async () => {
      ctx = await create();
    });
    afterEach(async () => {
      await ctx.store.dispose();
      await ctx.cleanup?.();
    });

    test("deliver returns a Maildir unique name; list and read give the message back byte for byte", async () => {
      const body = new Uint8Array(256).map((_, i) => i); // every byte value, NUL and CR/LF included
      const id = await ctx.store.deliver("bob@chat.example", body);
      expect(id).toMatch(UNIQUE_NAME);
      expect(id.match(UNIQUE_NAME)![1]).toBe("256");
      expect(await ctx.store.list("bob@chat.example")).toEqual([id]);
      expect(await ctx.store.read("bob@chat.example", id)).toEqual(body);
    });

    test("an empty message is stored with S=0", async () => {
      const id = await ctx.store.deliver("bob@chat.example", new Uint8Array(0));
      expect(id).toEndWith(",S=0");
      expect(await ctx.store.read("bob@chat.example", id)).toEqual(new Uint8Array(0));
    });

    test("unknown address or id: empty list, null read", async () => {
      expect(await ctx.store.list("nobody@chat.example")).toEqual([]);
      expect(await ctx.store.read("nobody@chat.example", "1.M1P1Q1.host,S=1")).toBeNull();
      const id = await ctx.store.deliver("bob@chat.example", bytes("x"));
      expect(await ctx.store.read("bob@chat.example", id + "x")).toBeNull();
      expect(await ctx.store.read("alice@chat.example", id)).toBeNull();
    });

    test("mailboxes are separate, also when one address is a prefix of another", async () => {
      const a = await ctx.store.deliver("bob@chat.example", bytes("for bob"));
      const b = await ctx.store.deliver("bob@chat.example.org", bytes("for bob at .org"));
      const c = await ctx.store.deliver("bo@chat.example", bytes("for bo"));
      expect(await ctx.store.list("bob@chat.example")).toEqual([a]);
      expect(await ctx.store.list("bob@chat.example.org")).toEqual([b]);
      expect(await ctx.store.list("bo@chat.example")).toEqual([c]);
      expect(text(await ctx.store.read("bob@chat.example.org", b))).toBe("for bob at .org");
    });

    test.each(["bob@1.2.3.4", "bob@2001:db8::1", "Bob.O'Neil+tag@chat.example", "a..b@chat.example"])(
      "address %p works",
      async (address) => {
        const id = await ctx.store.deliver(address, bytes("hi"));
        expect(await ctx.store.list(address)).toEqual([id]);
        expect(text(await ctx.store.read(address, id))).toBe("hi");
      },
    );

    test("500 concurrent deliveries: all distinct ids, all listed, all readable", async () => {
      const ids = await Promise.all(Array.from({ length: 500 }, (_, i) => ctx.store.deliver(`u${i % 5}@chat.example`, bytes(`m${i}`))));
      expect(new Set(ids).size).toBe(500);
      const listed = (await Promise.all([0, 1, 2, 3, 4].map((u) => ctx.store.list(`u${u}@chat.example`)))).flat();
      expect(listed.sort()).toEqual([...ids].sort());
      const i = 123;
      expect(text(await ctx.store.read(`u${i % 5}@chat.example`, ids[i]!))).toBe(`m${i}`);
    });

    test.each(BAD_ADDRESSES)("address %p is refused by deliver, list and read", async (address) => {
      await expect(ctx.store.deliver(address, bytes("x"))).rejects.toThrow(/refusing mailbox address/);
      await expect(ctx.store.list(address)).rejects.toThrow(/refusing mailbox address/);
      await expect(ctx.store.read(address, "1.M1P1Q1.h,S=1")).rejects.toThrow(/refusing mailbox address/);
    });

    test.each(["", "..", "../x", "a/b"])("read refuses id %p", async (id) => {
      await expect(ctx.store.read("bob@chat.example", id)).rejects.toThrow(/refusing message id/);
    });

    test("keys follow <address>:new:<unique name>; ':' in a name and address is %3A-encoded", async () => {
      const id = await ctx.store.deliver("bob@chat.example", bytes("x"));
      const id6 = await ctx.store.deliver("bob@2001:db8::1", bytes("y"));
      expect((await ctx.storage.getKeys("bob@chat.example")).sort()).toEqual([`bob@chat.example:new:${id}`]);
      expect(await ctx.storage.getKeys("bob@2001%3Adb8%3A%3A1")).toEqual([`bob@2001%3Adb8%3A%3A1:new:${id6}`]);
      expect(await ctx.storage.hasItem(`bob@chat.example:new:${id}`)).toBe(true);
      for (const key of await ctx.storage.getKeys()) expect(parseMaildirKey(key)).not.toBeNull();
    });

    test("a message moved to cur/ with flags is still listed and readable under its id", async () => {
      const id = await ctx.store.deliver("bob@chat.example", bytes("seen"));
      const flagged = `bob@chat.example:cur:${id}%3A2,S`;
      await ctx.storage.setItemRaw(flagged, await ctx.storage.getItemRaw(`bob@chat.example:new:${id}`));
      await ctx.storage.removeItem(`bob@chat.example:new:${id}`);
      expect(await ctx.storage.getKeys("bob@chat.example:cur")).toEqual([flagged]);
      expect(await ctx.store.list("bob@chat.example")).toEqual([id]);
      expect(text(await ctx.store.read("bob@chat.example", id))).toBe("seen");
    });

    // Storage.clear(prefix) is a no-op in unstorage 1.x when the driver is mounted at the root
    // (unjs/unstorage#336, #801): it hands the prefix only to mounts below it. So removal by
    // prefix goes through getKeys + removeItem here; clear() with no prefix empties everything.
    test("removeItem removes one message; clear() removes all", async () => {
      const a1 = await ctx.store.deliver("a@chat.example", bytes("1"));
      const a2 = await ctx.store.deliver("a@chat.example", bytes("2"));
      const b1 = await ctx.store.deliver("b@chat.example", bytes("3"));
      await ctx.storage.removeItem(`a@chat.example:new:${a1}`);
      await ctx.storage.removeItem(`a@chat.example:new:${a1}`); // already gone: no error
      expect(await ctx.store.list("a@chat.example")).toEqual([a2]);
      expect(await ctx.store.read("a@chat.example", a1)).toBeNull();
      expect(await ctx.store.list("b@chat.example")).toEqual([b1]);
      await ctx.storage.clear();
      expect(await ctx.storage.getKeys()).toEqual([]);
      expect(await ctx.store.list("b@chat.example")).toEqual([]);
    });

    additionalTests?.(() => ctx);
  });
}
