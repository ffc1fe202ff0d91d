// Names on disk and keys in unstorage for local mailboxes: which addresses may become a
// directory, how a Maildir unique name is made, and how <address>/<new|cur>/<file> maps to
// an unstorage key. Shared by the Maildir driver and the mailbox store, so a memory-backed
// store uses exactly the keys the Maildir driver does.
import { Buffer } from "node:buffer";
import { hostname } from "node:os";

/** The Maildir subdirectories that hold messages and are exposed as keys (tmp/ is not). */
export type MaildirSub = "new" | "cur";

export interface MaildirKey {
  address: string;
  sub: MaildirSub;
  /** File name inside the subdirectory, e.g. `1718000000.M123456P42Q7.host,S=4096` or `...:2,S`. */
  name: string;
}

// ---------------------------------------------------------------------------------------------
// Addresses and file names
// ---------------------------------------------------------------------------------------------

// Control characters (NUL included) and "/". With these gone, "." and ".." are the only names
// that could resolve outside the parent directory; they are refused too. An address such as
// `a..b@x` is a plain file name and stays accepted. "\" is an ordinary character on POSIX
// (Dovecot writes `\057` into unique names for a "/" in the host name) and stays accepted too.
const UNSAFE_NAME = /[\x00-\x1f\x7f/]/;
const MAX_NAME_BYTES = 255; // NAME_MAX on Linux filesystems

/** True if `name` is one path component that cannot leave its parent directory. */
export function isSafeName(name: string): boolean {
  return (
    typeof name === "string" &&
    name !== "" &&
    name !== "." &&
    name !== ".." &&
    !UNSAFE_NAME.test(name) &&
    Buffer.byteLength(name) <= MAX_NAME_BYTES
  );
}

/** Throws unless `address` can be used as the directory `<mail_root>/<address>`. */
export function assertMaildirAddress(address: string): void {
  if (!isSafeName(address)) {
    throw new Error(
      `refusing mailbox address ${JSON.stringify(address)}: it must be one non-empty path component ` +
        `(no "/", no control characters, not "." or "..", at most ${MAX_NAME_BYTES} bytes)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Unique names (https://cr.yp.to/proto/maildir.html, Dovecot's maildir_filename_generate)
// ---------------------------------------------------------------------------------------------

let counter = 0;
let host: string | undefined;

/**
 * A new Maildir unique name: `<secs>.M<usecs>P<pid>Q<n>.<host>` and, when `size` is given,
 * `,S=<size>` (Dovecot then knows the message size without a stat).
 *
 * Unique within this process through Q, a per-process counter that never repeats, however
 * many names are made in one microsecond; P and the host separate processes and machines,
 * and M separates a restarted process that got the same pid (pid 1 in a container).
 */
export function createMaildirName(size?: number): string {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const secs = Math.floor(us / 1_000_000);
  const usecs = us % 1_000_000;
  host ??= _escapeHost(hostname() || "localhost");
  const base = `${secs}.M${usecs}P${process.pid}Q${++counter}.${host}`;
  return size === undefined ? base : `${base},S=${size}`;
}

/** The base name of a Maildir file: everything before the `:2,<flags>` info part. */
export function baseOfMaildirName(name: string): string {
  const colon = name.indexOf(":");
  return colon < 0 ? name : name.slice(0, colon);
}

// ---------------------------------------------------------------------------------------------
// Keys: `<address>:<new|cur>:<file name>`, each part percent-encoded where unstorage would
// otherwise change it
// ---------------------------------------------------------------------------------------------

// unstorage's normalizeKey (v1.17) cuts a key at the first "?", turns "/" and "\" into ":",
// collapses "::", trims ":" at both ends, and its getKeys hides keys ending in "$" (the
// metadata convention). It does not touch case, "." inside a segment, "," or "=". So those
// six characters are escaped as %XX (and "%" itself, and control characters, so that decoding
// is unambiguous). The Maildir info separator ":" in `name:2,S` becomes `%3A`; an IPv6
// literal address `bob@2001:db8::1` becomes `bob@2001%3Adb8%3A%3A1`. A plain address and a
// unique name from createMaildirName are keys as they are: `bob@chat.example:new:1718.M5P9Q1.h,S=12`.
const KEY_UNSAFE = /[%:/\\?$\x00-\x1f\x7f]/g;
const SUBS: readonly string[] = ["new", "cur"];

/** Percent-encodes one key segment (see above). */
export function encodeKeySegment(segment: string): string {
  return segment.replace(KEY_UNSAFE, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0"));
}

/** Decodes one key segment; null unless it is in the canonical form encodeKeySegment makes. */
export function decodeKeySegment(segment: string): string | null {
  const decoded = segment.replace(/%([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  // One key per file: `%41` for "A" or a stray "%" would be a second spelling, so refuse it.
  return encodeKeySegment(decoded) === segment ? decoded : null;
}

/** The key of `<address>/<sub>/<name>`. Throws on an unsafe address or name. */
export function toMaildirKey(address: string, sub: MaildirSub, name: string): string {
  assertMaildirAddress(address);
  if (!isSafeName(name)) throw new Error(`refusing Maildir file name ${JSON.stringify(name)}`);
  return `${encodeKeySegment(address)}:${sub}:${encodeKeySegment(name)}`;
}

/** The inverse of toMaildirKey; null for anything else (wrong shape, unsafe part, tmp/). */
export function parseMaildirKey(key: string): MaildirKey | null {
  const parts = key.split(":");
  if (parts.length !== 3) return null;
  const [a, sub, n] = parts as [string, string, string];
  const address = decodeKeySegment(a);
  const name = decodeKeySegment(n);
  if (address === null || name === null || !SUBS.includes(sub)) return null;
  if (!isSafeName(address) || !isSafeName(name)) return null;
  return { address, sub: sub as MaildirSub, name };
}

// ---------------------------------------------------------------------------------------------
// private
// ---------------------------------------------------------------------------------------------

// The Maildir spec and Dovecot escape "/" and ":" in the host part, Dovecot also "," (it
// starts the `,S=` field).
function _escapeHost(name: string): string {
  return name.replace(/\//g, "\\057").replace(/:/g, "\\072").replace(/,/g, "\\054");
}
