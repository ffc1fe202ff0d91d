// Builders for the gate tests and the gate benchmark: real samples, their OpenPGP payloads, and
// packets/armor made from scratch so that each mutation changes exactly one thing.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const SAMPLES_DIR = join(import.meta.dir, "../fixtures/samples");

export function sampleNames(): string[] {
  return readdirSync(SAMPLES_DIR)
    .filter((f) => f.endsWith(".eml"))
    .sort();
}

/** A sample as a latin1 string (byte-exact round trip through `bytes()`). */
export function sample(name: string): string {
  return readFileSync(join(SAMPLES_DIR, name)).toString("latin1");
}

export function bytes(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "latin1"));
}

const ARMOR_RE = /-----BEGIN PGP MESSAGE-----\r?\n(?:[^\r\n]+\r?\n)*\r?\n([A-Za-z0-9+/=\r\n]*?)(?:=[A-Za-z0-9+/]{4}\r?\n)?-----END PGP MESSAGE-----\r?\n?/;

/** The binary OpenPGP message inside a sample's armor. */
export function payloadOf(msg: string): Uint8Array {
  const m = ARMOR_RE.exec(msg);
  if (!m) throw new Error("no armored message in sample");
  return new Uint8Array(Buffer.from(m[1]!.replace(/\s/g, ""), "base64"));
}

/** Replaces a sample's armored block (including its final line break) with `replacement`. */
export function withPayload(msg: string, replacement: string): string {
  if (!ARMOR_RE.test(msg)) throw new Error("no armored message in sample");
  return msg.replace(ARMOR_RE, () => replacement);
}

/** The line break style of a sample. */
export function eolOf(msg: string): string {
  return msg.includes("\r\n") ? "\r\n" : "\n";
}

/** RFC 9580 §6.1 CRC-24 (init 0xB704CE, polynomial 0x1864CFB). */
export function crc24(data: Uint8Array): number {
  let crc = 0xb704ce;
  for (const b of data) {
    crc ^= b << 16;
    for (let i = 0; i < 8; i++) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= 0x1864cfb;
    }
  }
  return crc & 0xffffff;
}

export interface ArmorOptions {
  eol?: string;
  headers?: string[];
  /** true (default): a correct checksum line; false: none; a string: that line verbatim */
  crc?: boolean | string;
  lineLength?: number;
}

export function armor(data: Uint8Array, o: ArmorOptions = {}): string {
  const eol = o.eol ?? "\n";
  const b64 = Buffer.from(data).toString("base64");
  const lines: string[] = ["-----BEGIN PGP MESSAGE-----", ...(o.headers ?? []), ""];
  const width = o.lineLength ?? 64;
  for (let i = 0; i < b64.length; i += width) lines.push(b64.slice(i, i + width));
  const crc = o.crc ?? true;
  if (crc === true) {
    const c = crc24(data);
    lines.push("=" + Buffer.from([c >> 16, (c >> 8) & 0xff, c & 0xff]).toString("base64"));
  } else if (typeof crc === "string") lines.push(crc);
  lines.push("-----END PGP MESSAGE-----", "");
  return lines.join(eol);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A new-format packet (RFC 9580 §4.2.1) with the shortest length encoding, or `lengthForm`. */
export function newPacket(tag: number, body: Uint8Array, lengthForm?: 1 | 2 | 5): Uint8Array {
  const n = body.length;
  const form = lengthForm ?? (n < 192 ? 1 : n < 8384 ? 2 : 5);
  let len: number[];
  if (form === 1) len = [n];
  else if (form === 2) len = [((n - 192) >> 8) + 192, (n - 192) & 0xff];
  else len = [255, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  return concat(new Uint8Array([0xc0 | tag, ...len]), body);
}

/** A new-format packet whose body is sent in partial chunks of 2^exp octets plus a final chunk. */
export function partialPacket(tag: number, body: Uint8Array, exps: number[]): Uint8Array {
  const chunks: Uint8Array[] = [new Uint8Array([0xc0 | tag])];
  let at = 0;
  for (const e of exps) {
    chunks.push(new Uint8Array([224 + e]), body.subarray(at, at + (1 << e)));
    at += 1 << e;
  }
  const rest = body.subarray(at);
  chunks.push(newPacket(0, rest).subarray(1)); // the final, definite length
  return concat(...chunks);
}

/** An old-format packet (RFC 9580 §4.2.2); lengthType 3 = indeterminate. */
export function oldPacket(tag: number, body: Uint8Array, lengthType: 0 | 1 | 2 | 3): Uint8Array {
  const n = body.length;
  const len = [[n], [n >> 8, n & 0xff], [(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff], []][lengthType]!;
  return concat(new Uint8Array([0x80 | (tag << 2) | lengthType, ...len]), body);
}

export interface Packet {
  tag: number;
  /** the whole packet, header included */
  raw: Uint8Array;
  body: Uint8Array;
}

/** Splits a (non-partial) packet sequence, old or new format, for mutation tests. */
export function splitPackets(data: Uint8Array): Packet[] {
  const out: Packet[] = [];
  let i = 0;
  while (i < data.length) {
    const h = data[i]!;
    let tag: number;
    let n: number;
    let hl: number;
    if (h & 0x40) {
      tag = h & 0x3f;
      const o = data[i + 1]!;
      if (o < 192) [n, hl] = [o, 2];
      else if (o < 224) [n, hl] = [((o - 192) << 8) + data[i + 2]! + 192, 3];
      else if (o === 255) [n, hl] = [new DataView(data.buffer, data.byteOffset + i + 2, 4).getUint32(0), 6];
      else throw new Error("partial lengths not supported here");
    } else {
      tag = (h >> 2) & 15;
      const k = [1, 2, 4][h & 3]!;
      n = 0;
      for (let j = 0; j < k; j++) n = n * 256 + data[i + 1 + j]!;
      hl = 1 + k;
    }
    out.push({ tag, raw: data.subarray(i, i + hl + n), body: data.subarray(i + hl, i + hl + n) });
    i += hl + n;
  }
  return out;
}

/** Deterministic filler (not random: failures must be reproducible). */
export function filler(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** A message of about `size` bytes: the GnuPG sample's PKESKs and a SEIPD v1 of filler, armored;
 * `partial` sends the SEIPD in 64 KiB partial body chunks. */
export function bigMessage(size: number, partial = false): string {
  const msg = sample("pass-gnupg-2.2-encrypted-signed.eml");
  const pk = splitPackets(payloadOf(msg)).filter((p) => p.tag === 1);
  const body = concat(new Uint8Array([1]), filler(Math.floor(((size * 3) / 4) * (64 / 66)))); // base64 in CRLF lines of 64
  const seipd = partial ? partialPacket(18, body, Array(Math.floor(body.length / 65536)).fill(16)) : newPacket(18, body);
  return withPayload(msg, armor(concat(...pk.map((p) => p.raw), seipd), { eol: "\r\n" }));
}

export interface PgpMimeOptions {
  eol?: string;
  boundary?: string;
  /** the whole Content-Type field, default built from `boundary` */
  contentType?: string;
  extraHeaders?: string[];
  preamble?: string;
  epilogue?: string;
  part1Headers?: string[];
  part1Body?: string;
  part2Headers?: string[];
  /** latin1 string (armored text or binary) */
  part2Body?: string;
  /** more parts after part 2, each "headers\r\n\r\nbody" */
  moreParts?: string[];
}

/** A PGP/MIME message in the shape GnuPG writes, every piece replaceable. */
export function pgpMime(o: PgpMimeOptions = {}): string {
  const eol = o.eol ?? "\r\n";
  const b = o.boundary ?? "=-=b0undary=-=";
  const payload = o.part2Body ?? armor(payloadOf(sample("pass-gnupg-2.2-encrypted-signed.eml")), { eol });
  const lines = [
    "From: <alice@a.test>",
    "To: <bob@b.test>",
    "Subject: ...",
    "MIME-Version: 1.0",
    ...(o.extraHeaders ?? []),
    o.contentType ?? `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";${eol} boundary="${b}"`,
    "",
  ];
  const parts = [
    [...(o.part1Headers ?? ["Content-Type: application/pgp-encrypted"]), "", o.part1Body ?? `Version: 1${eol}`].join(eol),
    [...(o.part2Headers ?? ["Content-Type: application/octet-stream"]), "", payload].join(eol),
    ...(o.moreParts ?? []),
  ];
  return lines.join(eol) + eol + (o.preamble ?? "") + parts.map((p) => `--${b}${eol}${p}${eol}`).join("") + `--${b}--${eol}` + (o.epilogue ?? "");
}
