// unstorage driver over a tree of Maildirs, one per address: `<base>/<address>/{tmp,new,cur}`,
// the layout Dovecot reads with `mail_location = maildir:<base>/%u`.
//
// Keys are `<address>:<new|cur>:<file name>` with ":", "/", "\", "?", "$", "%" and control
// characters percent-encoded in each part (unstorage would otherwise split, cut or hide the
// key; see maildir-names.ts). tmp/ holds writes in progress and has no keys.
//
// Every write is durable before it resolves, in the Maildir way: write the bytes to a new
// file in tmp/, fsync it, rename it into new/ (or cur/), fsync that directory. The file fsyncs
// of concurrent writes run concurrently; the directory fsync is shared between writes into the
// same directory (group commit, util/group-fsync.ts). The first write to an address creates its
// Maildir and fsyncs the parents of everything it created.
//
// A crash between the tmp/ write and the rename leaves a file in tmp/ that nothing will ever
// read. As the Maildir convention asks (and Dovecot does), files in tmp/ untouched for 36 hours
// are removed: on the first use of each address in a process, in the background.
import { type Dirent, promises as fsp } from "node:fs";
import { dirname, join, resolve, sep } from "node:path";
import { defineDriver, type StorageMeta } from "unstorage";
import { createError, createRequiredError } from "unstorage/drivers/utils/index";
import { createGroupFsync, fsyncDirectory } from "../util/group-fsync.ts";
import { createLimit } from "../util/limit.ts";
import {
  createMaildirName,
  decodeKeySegment,
  encodeKeySegment,
  isSafeName,
  type MaildirKey,
  parseMaildirKey,
} from "./maildir-names.ts";

export const DRIVER_NAME = "maildir";

export interface MaildirStorageOptions {
  /**
   * Directory holding one Maildir per address: the `<mail_root>` in Dovecot's
   * `mail_location = maildir:<mail_root>/%u`. Created (0700) if missing. Required.
   */
  base: string;
  /**
   * Owner given to the directories and files this driver creates (Dovecot refuses to run as
   * root, so when madmail runs as root its Maildirs must belong to the mail user). Maildir
   * directories found with another owner are changed too; `base` is changed only if created here.
   * @default null (the owner is whoever runs madmail)
   */
  uid?: number | null;
  /**
   * Group for the directories and files this driver creates; see `uid`.
   * @default null
   */
  gid?: number | null;
  /**
   * Most files and directories held open at once for writes. Deliveries beyond it wait
   * instead of failing with EMFILE; the disk gains nothing from more fsyncs in flight.
   * @default 128
   */
  maxOpenFiles?: number;
}

/** The options as resolved at construction (absolute `base`, nulls filled in). */
export interface ResolvedMaildirOptions {
  readonly base: string;
  readonly uid: number | null;
  readonly gid: number | null;
  readonly maxOpenFiles: number;
}

const SUBDIRS = ["tmp", "new", "cur"] as const;

/** Age after which a file in tmp/ is a leftover of a crash, not a write in progress (36 h). */
export const TMP_LEFTOVER_AGE_MS = 36 * 3600_000;

const maildirDriver = defineDriver<MaildirStorageOptions, never>((opts) => {
  if (!opts?.base) throw createRequiredError(DRIVER_NAME, "base");
  for (const name of ["uid", "gid"] as const) {
    const id = opts[name];
    if (id != null && !(Number.isSafeInteger(id) && id >= 0)) {
      throw createError(DRIVER_NAME, `Invalid option \`${name}\`: ${JSON.stringify(id)}. Expected a non-negative integer or null.`);
    }
  }
  const maxOpenFiles = opts.maxOpenFiles ?? 128;
  if (!(Number.isSafeInteger(maxOpenFiles) && maxOpenFiles >= 1)) {
    throw createError(DRIVER_NAME, `Invalid option \`maxOpenFiles\`: ${JSON.stringify(maxOpenFiles)}. Expected a positive integer.`);
  }
  const options: ResolvedMaildirOptions = Object.freeze({ base: resolve(opts.base), uid: opts.uid ?? null, gid: opts.gid ?? null, maxOpenFiles });
  const { base, uid, gid } = options;
  const owned = uid !== null || gid !== null;
  const inside = base.endsWith(sep) ? base : base + sep;

  // Every descriptor a write holds (its tmp file, a directory being fsynced) takes a slot. No
  // one holds a slot while waiting for another, so the limit cannot deadlock.
  const limit = createLimit(maxOpenFiles);
  const syncDir = createGroupFsync((dir) => limit(() => fsyncDirectory(dir)));
  const maildirs = new Map<string, Promise<void>>(); // address -> its Maildir exists and is durable
  let baseReady: Promise<void> | undefined;
  const pending = new Set<Promise<unknown>>(); // writes and removals in flight, awaited by dispose()
  let disposed = false;

  /** Key -> parts and paths; throws for any key that is not exactly one file in new/ or cur/. */
  function r(key: string): MaildirKey & { dir: string; path: string } {
    const parsed = parseMaildirKey(key);
    if (parsed) {
      const dir = join(base, parsed.address, parsed.sub);
      const path = join(dir, parsed.name);
      // The parts are single safe path components, so this holds; checked anyway because a
      // key that escapes the base must never reach the disk.
      if (path.startsWith(inside)) return { ...parsed, dir, path };
    }
    throw createError(
      DRIVER_NAME,
      `Invalid key: ${JSON.stringify(key)}. Expected "<address>:new|cur:<file name>", each part one ` +
        `path component (not "." or "..", no "/" or control characters), percent-encoded as in maildir-names.ts`,
    );
  }

  /** Runs a mutation; dispose() waits for it. */
  function track<T>(work: () => Promise<T>): Promise<T> {
    let run: Promise<T>;
    try {
      if (disposed) throw createError(DRIVER_NAME, "The driver has been disposed.");
      run = work();
    } catch (err) {
      return Promise.reject(err);
    }
    const settled = run.then(_ignore, _ignore);
    pending.add(settled);
    settled.then(() => pending.delete(settled));
    return run;
  }

  // -- durable writes ----------------------------------------------------------------------

  async function write(key: string, data: Uint8Array): Promise<void> {
    const k = r(key); // refuse a bad key before touching the disk
    let tmp: string;
    try {
      tmp = await writeTmp(k.address, data);
    } catch (err) {
      if (_code(err) !== "ENOENT") throw err;
      // tmp/ vanished since this process first used the Maildir (removed by hand): make it again.
      maildirs.delete(k.address);
      baseReady = undefined;
      tmp = await writeTmp(k.address, data);
    }
    try {
      await fsp.rename(tmp, k.path).catch(async (err) => {
        if (_code(err) !== "ENOENT") throw err;
        // new/ or cur/ removed by hand since this process made the Maildir: make it again.
        maildirs.delete(k.address);
        await ensureMaildir(k.address);
        await fsp.rename(tmp, k.path);
      });
    } catch (err) {
      await fsp.unlink(tmp).catch(_ignore);
      throw err;
    }
    // The rename has completed, so the fsync this waits for covers it (see util/group-fsync.ts).
    await syncDir(k.dir);
  }

  /** Writes `data` to a fresh file in the address's tmp/ and fsyncs it; returns its path. */
  async function writeTmp(address: string, data: Uint8Array): Promise<string> {
    await ensureMaildir(address);
    const tmp = join(base, address, "tmp", createMaildirName());
    await limit(async () => {
      // "wx" = O_CREAT|O_EXCL: never write into a file someone else has. 0600 (a umask can
      // only narrow it).
      const handle = await fsp.open(tmp, "wx", 0o600);
      try {
        try {
          for (let off = 0; off < data.byteLength; ) {
            const { bytesWritten } = await handle.write(data, off, data.byteLength - off, off);
            off += bytesWritten;
          }
          if (owned) await handle.chown(uid ?? -1, gid ?? -1);
          // Data and inode (size, owner) are on disk before the name can appear in new/.
          await handle.sync();
        } finally {
          await handle.close();
        }
      } catch (err) {
        await fsp.unlink(tmp).catch(_ignore);
        throw err;
      }
    });
    return tmp;
  }

  /** Memoised per address; a failure is forgotten so that the next write tries again. */
  function ensureMaildir(address: string): Promise<void> {
    let ready = maildirs.get(address);
    if (!ready) {
      const made = createMaildir(address);
      maildirs.set(address, made);
      made.catch(() => maildirs.get(address) === made && maildirs.delete(address));
      ready = made;
    }
    return ready;
  }

  // Runs on the first use of an address in this process, also when the Maildir exists: an
  // earlier process may have died between its mkdir and its fsync, so the entries are
  // fsynced again (once per address per process, so it costs nothing measurable).
  async function createMaildir(address: string): Promise<void> {
    await ensureBase();
    const root = join(base, address);
    await mkdirOwned(root);
    await Promise.all(SUBDIRS.map((sub) => mkdirOwned(join(root, sub))));
    // root's entries tmp/new/cur, and base's entry <address>.
    await Promise.all([syncDir(root), syncDir(base)]);
    track(() => removeTmpLeftovers(join(root, "tmp"))).catch(_ignore);
  }

  // Only regular files, by their mtime (a write in progress touches its file; none takes hours).
  // Nothing here may fail a delivery: errors leave the file for the next process.
  async function removeTmpLeftovers(tmpDir: string): Promise<void> {
    const before = Date.now() - TMP_LEFTOVER_AGE_MS;
    for (const e of await _readdir(tmpDir).catch(() => [])) {
      if (!e.isFile()) continue;
      const path = join(tmpDir, e.name);
      await limit(async () => {
        const st = await fsp.lstat(path).catch(() => null);
        if (st && st.isFile() && st.mtimeMs < before) await fsp.unlink(path).catch(_ignore);
      });
    }
  }

  function ensureBase(): Promise<void> {
    baseReady ??= (async () => {
      // mkdir -p returns the first directory it created; everything from there down to base is new.
      const first = await fsp.mkdir(base, { recursive: true, mode: 0o700 });
      const created: string[] = [];
      if (first) for (let d = base; ; d = dirname(d)) {
        created.push(d);
        if (d === first || d === dirname(d)) break;
      }
      for (const d of created) await ownDir(d);
      // Each created directory's entry lives in its parent; base's own parent is synced even
      // when nothing was created, in case an earlier process died before doing it.
      const parents = new Set([dirname(base), ...created.map((d) => dirname(d))]);
      for (const p of parents) await fsyncDirectory(p);
    })().catch((err: unknown) => {
      baseReady = undefined;
      throw err;
    });
    return baseReady;
  }

  async function mkdirOwned(dir: string): Promise<void> {
    try {
      await fsp.mkdir(dir, 0o700);
    } catch (err) {
      if (_code(err) !== "EEXIST") throw err;
      // Possibly left by a process that died between mkdir and chown: Dovecot, running as the
      // mail user, could not open it.
      if (owned) {
        const st = await fsp.stat(dir);
        if ((uid !== null && st.uid !== uid) || (gid !== null && st.gid !== gid)) await fsp.chown(dir, uid ?? -1, gid ?? -1);
      }
      return;
    }
    await ownDir(dir);
  }

  async function ownDir(dir: string): Promise<void> {
    if (owned) await fsp.chown(dir, uid ?? -1, gid ?? -1);
    await fsp.chmod(dir, 0o700); // mkdir's mode passes through the umask; make it exact
  }

  async function remove(key: string): Promise<void> {
    const { dir, path } = r(key);
    try {
      await fsp.unlink(path);
    } catch (err) {
      if (_code(err) === "ENOENT" || _code(err) === "ENOTDIR") return;
      throw err;
    }
    await syncDir(dir);
  }

  // -- keys ----------------------------------------------------------------------------------

  // `prefix` is unstorage's normalised base ("", "<address>:" or "<address>:<sub>:"); only the
  // directories it names are read.
  async function listKeys(prefix: string | undefined): Promise<string[]> {
    const parts = (prefix ?? "").split(":").filter(Boolean);
    if (parts.length > 2) return [];
    let addresses: string[];
    if (parts[0] === undefined) {
      addresses = (await _readdir(base)).filter((e) => e.isDirectory() && isSafeName(e.name)).map((e) => e.name);
    } else {
      const address = decodeKeySegment(parts[0]);
      if (address === null || !isSafeName(address)) return [];
      addresses = [address];
    }
    const subs = parts[1] === undefined ? ["new", "cur"] : ["new", "cur"].filter((s) => s === parts[1]);
    const keys: string[] = [];
    await Promise.all(
      addresses.flatMap((address) =>
        subs.map(async (sub) => {
          for (const e of await _readdir(join(base, address, sub))) {
            if (!e.isDirectory() && isSafeName(e.name)) keys.push(`${encodeKeySegment(address)}:${sub}:${encodeKeySegment(e.name)}`);
          }
        }),
      ),
    );
    return keys;
  }

  return {
    name: DRIVER_NAME,
    options,
    async hasItem(key) {
      if (_isMetaKey(key)) return false;
      const st = await fsp.stat(r(key).path).catch(_missing);
      return st?.isFile() ?? false;
    },
    async getItem(key) {
      if (_isMetaKey(key)) return null;
      return fsp.readFile(r(key).path, "utf8").catch(_missing);
    },
    async getItemRaw(key) {
      if (_isMetaKey(key)) return null;
      return fsp.readFile(r(key).path).catch(_missing);
    },
    async getMeta(key): Promise<StorageMeta | null> {
      if (_isMetaKey(key)) return null;
      const st = await fsp.stat(r(key).path).catch(_missing);
      return st?.isFile() ? { size: st.size, mtime: st.mtime, atime: st.atime, ctime: st.ctime } : null;
    },
    setItem(key, value) {
      return track(() => write(_noMetaKey(key), new TextEncoder().encode(value)));
    },
    setItemRaw(key, value) {
      return track(() => write(_noMetaKey(key), _toBytes(value)));
    },
    removeItem(key) {
      if (_isMetaKey(key)) return; // unstorage's removeItem(key, { removeMeta: true }); nothing stored
      return track(() => remove(key));
    },
    getKeys(prefix) {
      return listKeys(prefix);
    },
    // Removes the messages (new/ and cur/ files) under the prefix; directories, tmp/ and
    // Dovecot's own files (dovecot-uidlist, indexes) stay.
    clear(prefix) {
      return track(async () => {
        const keys = await listKeys(prefix);
        await Promise.all(keys.map((key) => remove(key)));
      });
    },
    async dispose() {
      disposed = true;
      await Promise.all(pending);
      maildirs.clear();
    },
  };
});

export default maildirDriver;
export { maildirDriver };

// ---------------------------------------------------------------------------------------------
// private
// ---------------------------------------------------------------------------------------------

function _ignore(): void {}

function _code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** For reads: a missing file (or a path through a missing directory) is null, not an error. */
function _missing(err: unknown): null {
  const code = _code(err);
  if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") return null;
  throw err;
}

// unstorage keeps metadata under `<key>$` (getMeta reads it, removeItem may remove it). A real
// key never ends in "$" (it is encoded), and this driver keeps no such metadata.
function _isMetaKey(key: string): boolean {
  return key.endsWith("$");
}

function _noMetaKey(key: string): string {
  if (_isMetaKey(key)) throw createError(DRIVER_NAME, `Cannot store metadata (${JSON.stringify(key)}): a Maildir file has none besides its stat.`);
  return key;
}

function _toBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (typeof value === "string") return new TextEncoder().encode(value);
  throw createError(DRIVER_NAME, `setItemRaw expects bytes (Uint8Array, ArrayBuffer or a view) or a string, got ${typeof value}.`);
}

async function _readdir(dir: string): Promise<Dirent[]> {
  return (await fsp.readdir(dir, { withFileTypes: true }).catch(_missing)) ?? [];
}
