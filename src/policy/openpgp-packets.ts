// Shape check of an OpenPGP message without decrypting it: ASCII armor (RFC 9580 §6.2), a
// streaming base64 decoder (RFC 4648 §4) and a walk over packet headers (RFC 9580 §4.2).
//
// Why not the openpgp package: readMessage() is async (web streams), parses every packet into
// objects and copies their bodies, while the gate must answer synchronously for thousands of
// messages a second. The walk below reads only the header octets plus a few version octets and
// skips bodies by length, so a 30 MB SEIPD costs one validating pass of the base64 and no copy.

/** Decoded bytes, read front to back. */
export interface ByteSource {
  /** Next byte, or -1 at the end (or on malformed input, see `malformed`). */
  read(): number;
  /** Skips n bytes; false when the data ends first or is malformed. */
  skip(n: number): boolean;
  /** True when every byte has been consumed and the input was well-formed. */
  atEnd(): boolean;
  readonly malformed: boolean;
}

/** Raw binary OpenPGP data. */
export class BytesReader implements ByteSource {
  readonly malformed = false;
  constructor(private readonly buf: Uint8Array, private pos: number, private readonly end: number) {}
  read(): number {
    return this.pos < this.end ? this.buf[this.pos++]! : -1;
  }
  skip(n: number): boolean {
    if (n < 0 || n > this.end - this.pos) return false;
    this.pos += n;
    return true;
  }
  atEnd(): boolean {
    return this.pos === this.end;
  }
}

const EOL = 64; // CR, LF
const SPACE = 65; // SP, HT: allowed only at the end of a line
const PAD = 66; // "="
const B64 = new Uint8Array(256).fill(255);
for (let i = 0; i < 64; i++) B64["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".charCodeAt(i)] = i;
B64[13] = B64[10] = EOL;
B64[32] = B64[9] = SPACE;
B64[61] = PAD;
const WINDOW = 512;
const COUNT = Uint16Array.from(B64, (v) => (v < 64 ? 1 : v === EOL ? 0 : WINDOW));
const isWs = (c: number | undefined): boolean => c !== undefined && (B64[c] === EOL || B64[c] === SPACE);

/** Strict streaming base64 decoder over buf[start, end): line breaks are skipped, spaces only at
 * a line's end; any other byte outside the alphabet, an unpadded final group, a misplaced "=" or
 * data after the padding make it `malformed`. Allocates nothing. */
export class Base64Reader implements ByteSource {
  malformed = false;
  private quad = 0; // the current group's 24 bits
  private have = 0; // decoded bytes in it (3, or 1-2 after padding)
  private next = 0; // the next one to hand out
  private done = false;
  constructor(private readonly buf: Uint8Array, private pos: number, private readonly end: number) {}

  read(): number {
    if (this.next === this.have && !this.fill()) return -1;
    return (this.quad >>> (16 - 8 * this.next++)) & 0xff;
  }

  skip(n: number): boolean {
    if (n < 0) return false;
    const pending = Math.min(n, this.have - this.next);
    this.next += pending;
    n -= pending;
    while (n > 0) {
      if (n >= 3 && !this.done) {
        const left = this.skipGroups(n);
        if (left !== n) {
          n = left;
          continue;
        }
      }
      if (!this.fill()) return false;
      this.next = Math.min(n, this.have);
      n -= this.next;
    }
    return true;
  }

  atEnd(): boolean {
    return this.next === this.have && !this.fill() && !this.malformed;
  }

  /** Fast path of skip(): validates and counts whole groups without decoding them. Windows of at
   * most WINDOW bytes, never more than asked for, are summed branch-free (COUNT: 1 per alphabet
   * character, 0 per line break, WINDOW for anything else); the first window that holds something
   * else, and what follows, go character by character. Stops before padding or junk (fill()
   * decides on those) and leaves pos after the last whole group, so the work stays linear. */
  private skipGroups(n: number): number {
    const buf = this.buf;
    const end = this.end;
    const want = Math.floor(n / 3) * 4;
    let p = this.pos;
    let chars = 0;
    let groupEnd = p;
    let groupChars = 0;
    while (chars < want) {
      const stop = Math.min(end, p + WINDOW, p + want - chars);
      let sum = 0;
      for (let i = p; i < stop; i++) sum += COUNT[buf[i]!]!;
      if (sum >= WINDOW || stop === p) break;
      chars += sum;
      p = stop;
      if ((chars & 3) === 0) {
        groupEnd = p;
        groupChars = chars;
      }
    }
    while (chars < want && p < end) {
      const v = B64[buf[p]!]!;
      if (v < 64) {
        p++;
        if ((++chars & 3) === 0) {
          groupEnd = p;
          groupChars = chars;
        }
      } else if (v === EOL) p++;
      else if (v === SPACE) {
        while (p < end && B64[buf[p]!] === SPACE) p++;
        if (p < end && B64[buf[p]!] !== EOL) break;
      } else break;
    }
    this.pos = groupEnd;
    return n - (groupChars >> 2) * 3;
  }

  /** Decodes the next group of four characters; false at the end of the data or on an error. */
  private fill(): boolean {
    if (this.done) return false;
    const buf = this.buf;
    const end = this.end;
    let p = this.pos;
    let acc = 0;
    let n = 0;
    let pad = 0;
    while (n < 4 && p < end) {
      const v = B64[buf[p++]!]!;
      if (v < 64 && pad === 0) {
        acc = (acc << 6) | v;
        n++;
      } else if (v === EOL) continue;
      else if (v === SPACE) {
        while (p < end && B64[buf[p]!] === SPACE) p++;
        if (p < end && B64[buf[p]!] !== EOL) return this.fail();
      } else if (v === PAD && n >= 2) {
        acc <<= 6;
        n++;
        pad++;
      } else return this.fail();
    }
    this.pos = p;
    if (n === 0) {
      this.done = true;
      return false;
    }
    if (n < 4) return this.fail();
    if (pad > 0) {
      this.done = true; // only whitespace may follow the padding
      for (; p < end; p++) if (!isWs(buf[p])) return this.fail();
    }
    this.quad = acc;
    this.have = 3 - pad;
    this.next = 0;
    return true;
  }

  private fail(): false {
    this.malformed = this.done = true;
    this.have = this.next = 0;
    return false;
  }
}

const BEGIN = "-----BEGIN PGP MESSAGE-----";
const END = "-----END PGP MESSAGE-----";
/** RFC 9580 §6.2.2: the armor header keys defined for a message. Anything else is refused. */
const ARMOR_KEYS = /^(Version|Comment|Charset|MessageID):( |$)/i;
const MAX_ARMOR_HEADERS = 1024;

/** Checks that buf[start, end) is one OpenPGP message, binary or armored, made of PKESK/SKESK
 * packets and one SEIPD that runs to the end. Returns the reason when it is not. */
export function checkOpenPgpMessage(buf: Uint8Array, start: number, end: number): string | undefined {
  if (start < end && buf[start]! & 0x80) return walkPackets(new BytesReader(buf, start, end));
  const data = findArmoredData(buf, start, end);
  if (typeof data === "string") return data;
  const r = new Base64Reader(buf, data[0], data[1]);
  const err = walkPackets(r);
  return r.malformed ? "bad base64 in the armor" : err;
}

/** RFC 9580 §6.2: BEGIN line, armor headers, blank line, base64, optional "=XXXX" checksum
 * line, END line; only whitespace around it. The CRC-24 is not verified: RFC 9580 §6.1 makes it
 * optional and tells decoders not to reject a message because of it, so it proves nothing about
 * encryption; a syntactically bad checksum line still fails (it is not base64 data). */
function findArmoredData(buf: Uint8Array, start: number, end: number): [number, number] | string {
  let p = start;
  while (p < end && isWs(buf[p])) p++;
  if (!matchesAt(buf, p, end, BEGIN)) return "part 2 is neither binary OpenPGP nor an armored PGP MESSAGE";
  p += BEGIN.length;
  while (p < end && (buf[p] === 32 || buf[p] === 9 || buf[p] === 13)) p++;
  if (p >= end || buf[p] !== 10) return "garbage after the BEGIN PGP MESSAGE line";
  const headers = ++p;
  for (;;) {
    const nl = buf.indexOf(10, p);
    if (nl < 0 || nl >= end) return "armor header block not terminated by a blank line";
    const line = p;
    let e = nl;
    while (e > line && isWs(buf[e - 1])) e--;
    p = nl + 1;
    if (e === line) break; // blank line: the base64 data follows
    if (p - headers > MAX_ARMOR_HEADERS) return "armor headers too long";
    if (!ARMOR_KEYS.test(String.fromCharCode(...buf.subarray(line, e)))) return "unexpected armor header line";
  }
  const dataStart = p;
  let e = end;
  while (e > dataStart && isWs(buf[e - 1])) e--;
  const endLine = e - END.length;
  if (endLine < dataStart || !matchesAt(buf, endLine, end, END) || (endLine > dataStart && buf[endLine - 1] !== 10))
    return "armored message does not end with an END PGP MESSAGE line";
  // the last line before END may be the checksum "=" + 4 base64 characters
  let le = endLine - 1;
  while (le > dataStart && isWs(buf[le - 1])) le--;
  const ls = Math.max(dataStart, buf.lastIndexOf(10, le - 1) + 1);
  const isCrc = le - ls === 5 && buf[ls] === 61 && [1, 2, 3, 4].every((k) => B64[buf[ls + k]!]! < 64);
  return [dataStart, isCrc ? ls : endLine];
}

function matchesAt(buf: Uint8Array, at: number, end: number, s: string): boolean {
  if (at + s.length > end) return false;
  for (let i = 0; i < s.length; i++) if (buf[at + i] !== s.charCodeAt(i)) return false;
  return true;
}

const SEIPD = 18;
/** RFC 9580 §5.13.1/2: v1 = version + at least an 8-octet IV prefix, 2 check octets and the
 * 22-octet MDC packet; v2 = 4 fixed octets, a 32-octet salt and the 16-octet final AEAD tag. */
const MIN_SEIPD = [0, 1 + 8 + 2 + 22, 4 + 32 + 16];
const TAG_NAMES: Record<number, string> = {
  2: "signature", 4: "one-pass signature", 8: "compressed data", 10: "marker", 11: "literal data", 21: "padding",
  9: "SED (encrypted without integrity protection)", 20: "OCB encrypted data (non-standard)",
};

/** Walks the packet sequence: (PKESK v3|v6 | SKESK v4|v6)* then exactly one SEIPD v1|v2 that
 * ends with the data. Old-format headers are accepted (GnuPG writes PKESK/SKESK that way; SEIPD
 * cannot be old-format, its tag is over 15), partial body lengths only for the SEIPD. */
export function walkPackets(src: ByteSource): string | undefined {
  const len = { n: 0, partial: false };
  for (let count = 0; ; count++) {
    const h = src.read();
    if (h < 0) return count === 0 ? "empty OpenPGP message" : "no SEIPD packet";
    if (!(h & 0x80)) return "not an OpenPGP packet header";
    const newFormat = (h & 0x40) !== 0;
    const tag = newFormat ? h & 0x3f : (h >> 2) & 0x0f;
    if (tag !== 1 && tag !== 3 && tag !== SEIPD) return `${TAG_NAMES[tag] ?? `tag ${tag}`} packet (only PKESK, SKESK and SEIPD are allowed)`;
    if (newFormat) {
      if (!readNewLength(src, len)) return "truncated packet header";
    } else {
      if ((h & 3) === 3) return "indeterminate-length packet"; // only a SEIPD may run to the end
      len.partial = false;
      len.n = readNumber(src, 1 << (h & 3));
      if (len.n < 0) return "truncated packet header";
    }
    if (tag !== SEIPD) {
      if (len.partial) return "partial body length outside a SEIPD packet"; // RFC 9580 §4.2.1.4
      const v = len.n > 0 ? src.read() : -1;
      if (tag === 1 && v !== 3 && v !== 6) return `PKESK version ${v}`;
      if (tag === 3 && v !== 4 && v !== 6) return `SKESK version ${v}`;
      if (!src.skip(len.n - 1)) return "truncated packet";
      continue;
    }
    if (len.partial && len.n < 512) return "first partial body length under 512 octets";
    const v = len.n > 0 ? src.read() : -1;
    if (v !== 1 && v !== 2) return `SEIPD version ${v}`;
    let used = 1;
    if (v === 2 && len.n >= 4) {
      const cipher = src.read();
      const aead = src.read();
      const chunk = src.read();
      if (cipher <= 0 || aead < 1 || aead > 3 || chunk < 0 || chunk > 16) return "bad SEIPD v2 parameters";
      used = 4;
    }
    let total = len.n;
    if (!src.skip(len.n - used)) return "truncated SEIPD packet";
    while (len.partial) {
      if (!readNewLength(src, len) || !src.skip(len.n)) return "truncated SEIPD packet";
      total += len.n;
    }
    if (total < MIN_SEIPD[v]!) return "SEIPD packet too short";
    return src.atEnd() ? undefined : "data after the SEIPD packet";
  }
}

/** RFC 9580 §4.2.1: one-, two- and five-octet lengths, and partial body lengths (224-254). */
function readNewLength(src: ByteSource, out: { n: number; partial: boolean }): boolean {
  const o = src.read();
  out.partial = o >= 224 && o < 255;
  if (o < 192) out.n = o; // -1 at the end of the data
  else if (o < 224) {
    const b = src.read();
    out.n = b < 0 ? -1 : ((o - 192) << 8) + b + 192;
  } else out.n = o === 255 ? readNumber(src, 4) : 1 << (o & 0x1f);
  return out.n >= 0;
}

/** A big-endian number of k octets; -1 when the data ends first. */
function readNumber(src: ByteSource, k: number): number {
  let n = 0;
  for (let i = 0; i < k; i++) {
    const b = src.read();
    if (b < 0) return -1;
    n = n * 256 + b;
  }
  return n;
}
