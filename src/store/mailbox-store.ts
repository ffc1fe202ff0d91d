// The mailbox store: what the accept pipeline calls to put a message into a local mailbox.
// It speaks unstorage, so it runs over the Maildir driver in production and over unstorage's
// memory driver in unit tests, with the same keys (maildir-names.ts) on both.
//
// Several recipients of one message: the caller calls deliver() once per recipient,
// concurrently (accept.ts does, with Promise.all). Each recipient gets its own file, which has
// to be fsynced anyway; the directory fsyncs of concurrent deliveries are already shared by the
// driver's group commit, so a deliverMany() would save nothing and is not offered.
import { createStorage, type Storage } from "unstorage";
import maildirDriver from "./maildir-driver.ts";
import {
  assertMaildirAddress,
  baseOfMaildirName,
  createMaildirName,
  encodeKeySegment,
  isSafeName,
  parseMaildirKey,
  toMaildirKey,
} from "./maildir-names.ts";

export interface MailboxStore {
  /**
   * Durably stores one message for a local address; resolves with its id once it is on disk.
   * The id is the Maildir unique name of the file in new/ (`<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>`).
   * Rejects for an address that is not one safe path component (see assertMaildirAddress).
   * `body` is stored as given; do not change it while the promise is pending.
   */
  deliver(address: string, body: Uint8Array, opts?: { name?: string }): Promise<string>;
  /** For tests and tools: the ids of the messages in new/ and cur/, sorted by name. */
  list(address: string): Promise<string[]>;
  /** For tests and tools: a message's bytes, found in new/ or (with any flags) in cur/; null if absent. */
  read(address: string, id: string): Promise<Uint8Array | null>;
  /** Waits for writes in flight, then releases the storage. */
  dispose(): Promise<void>;
}

export interface MaildirStoreOptions {
  /** Mail root: Maildirs are `<root>/<address>/{tmp,new,cur}` (Dovecot: `maildir:<root>/%u`). */
  root: string;
  /** Owner for created directories and files, e.g. the uid of Dovecot's mail user. @default null */
  uid?: number | null;
  /** Group for created directories and files. @default null */
  gid?: number | null;
}

/** A mailbox store over any unstorage Storage (Maildir driver, memory driver, a mount...). */
export function createMailboxStore(storage: Storage): MailboxStore {
  return {
    async deliver(address, body, opts) {
      assertMaildirAddress(address);
      if (opts?.name !== undefined && !isSafeName(opts.name)) throw new Error(`refusing message name ${JSON.stringify(opts.name)}`);
      // A given name (derived from a delivery id) makes a retried delivery findable.
      const id = opts?.name ?? createMaildirName(body.byteLength);
      await storage.setItemRaw(toMaildirKey(address, "new", id), body);
      return id;
    },

    async list(address) {
      assertMaildirAddress(address);
      const keys = await storage.getKeys(encodeKeySegment(address));
      const ids: string[] = [];
      for (const key of keys) {
        const k = parseMaildirKey(key);
        if (k && k.address === address) ids.push(baseOfMaildirName(k.name));
      }
      return ids.sort();
    },

    async read(address, id) {
      assertMaildirAddress(address);
      if (!isSafeName(id)) throw new Error(`refusing message id ${JSON.stringify(id)}`);
      let value = await storage.getItemRaw(toMaildirKey(address, "new", id));
      if (value == null) {
        // Once a reader (Dovecot) has seen a message it moves it to cur/ as `<id>:2,<flags>`.
        const keys = await storage.getKeys(`${encodeKeySegment(address)}:cur`);
        const key = keys.find((key) => {
          const k = parseMaildirKey(key);
          return k !== null && k.address === address && baseOfMaildirName(k.name) === id;
        });
        if (key) value = await storage.getItemRaw(key);
      }
      return _toBytes(value);
    },

    dispose() {
      return storage.dispose();
    },
  };
}

/** The production store: Maildirs under `opts.root`, owned by `opts.uid`/`opts.gid` if given. */
export function createMaildirStore(opts: MaildirStoreOptions): MailboxStore {
  const driver = maildirDriver({ base: opts.root, uid: opts.uid ?? null, gid: opts.gid ?? null });
  return createMailboxStore(createStorage({ driver }));
}

// ---------------------------------------------------------------------------------------------
// private
// ---------------------------------------------------------------------------------------------

// Maildir gives a Buffer, the memory driver whatever was stored (a string if set with setItem).
function _toBytes(value: unknown): Uint8Array | null {
  if (value == null) return null;
  if (value instanceof Uint8Array) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (typeof value === "string") return new TextEncoder().encode(value);
  return null;
}
