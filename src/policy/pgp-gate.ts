// The PGP gate (DESIGN.md §4): is an inbound message end-to-end encrypted? It looks only at the
// top-level headers and the MIME/OpenPGP structure, never decrypts, and fails closed: whatever
// is not clearly one of the three accepted shapes is refused.
//
// 1. "pgp-mime" (RFC 3156 §4): multipart/encrypted; protocol="application/pgp-encrypted" with
//    exactly two parts, application/pgp-encrypted whose body is "Version: 1", then
//    application/octet-stream holding one OpenPGP message (see openpgp-packets.ts).
// 2. "secure-join": the unencrypted first step of a Secure-Join handshake, as the chatmail relay
//    filter allows it: `Secure-Join: vc-request|vg-request`, multipart/mixed with exactly one
//    text/plain part whose whole text is "secure-join: <the same step>". The later steps
//    (vc-auth, vg-member-added...) are encrypted by Delta Chat and get no exception.
// 3. "bounce" (RFC 3464/6522): multipart/report; report-type=delivery-status with
//    Auto-Submitted, From a mailer-daemon address, parts text/plain, message/delivery-status
//    and optionally the returned message or its headers.
//
// Ambiguous cases are decided strictly, each where it is implemented: a repeated deciding
// header or parameter, RFC 2231 forms of boundary/protocol, "Name :" and whitespace-only lines in
// a header block fail (parsers disagree on them, so a client could see another message than the
// gate); so do lines that start with the boundary but are no delimiter, a missing close
// delimiter, a preamble or epilogue over 1 KiB, text around the armor, armor headers other than
// Version/Comment/Charset/MessageID and partial lengths outside the SEIPD. The armor checksum is
// optional and not verified; old-format packet headers and non-minimal lengths are fine.
import { type ContentType, isValidBoundary, latin1, parseContentType, readHeaders, splitMultipart } from "./mime-structure.ts";
import { Base64Reader, checkOpenPgpMessage, walkPackets } from "./openpgp-packets.ts";

export type GateVerdict = { pass: true; kind: "pgp-mime" | "secure-join" | "bounce" } | { pass: false; reason: string };

const TOP_FIELDS = ["content-type", "content-transfer-encoding", "secure-join", "auto-submitted", "from"];
const PART_FIELDS = ["content-type", "content-transfer-encoding"];
const [CT, CTE, SECURE_JOIN, AUTO_SUBMITTED, FROM] = [0, 1, 2, 3, 4] as const;

const SECURE_JOIN_STEPS = ["vc-request", "vg-request"];
const DSN_TYPES = ["message/delivery-status", "message/global-delivery-status"];
const RETURNED_TYPES = ["message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"];

/** Decides whether an inbound message may pass the encryption gate. Synchronous, no I/O. */
export function checkEncryption(message: Uint8Array): GateVerdict {
  const top = readHeaders(message, 0, message.length, TOP_FIELDS);
  if (typeof top === "string") return fail(top);
  const v = top.values;
  if (v[CT] === null) return fail("repeated Content-Type header");
  const ct = v[CT] === undefined ? undefined : parseContentType(v[CT]);
  if (ct === null) return fail("unparseable Content-Type header");
  if (top.bodyStart < 0) return fail("message without a body");
  const type = ct?.type ?? "text/plain";
  if (type === "multipart/encrypted") return checkPgpMime(message, top.bodyStart, ct!, v[CTE]);
  if (v[SECURE_JOIN] !== undefined) return checkSecureJoin(message, top.bodyStart, ct, v[CTE], v[SECURE_JOIN]);
  if (type === "multipart/report") return checkBounce(message, top.bodyStart, ct!, v);
  return fail(`not encrypted (${type})`);
}

type Cte = string | null | undefined;

function checkPgpMime(msg: Uint8Array, bodyStart: number, ct: ContentType, cte: Cte): GateVerdict {
  if (ct.params.get("protocol")?.toLowerCase() !== "application/pgp-encrypted")
    return fail("multipart/encrypted without protocol=application/pgp-encrypted");
  const parts = readParts(msg, bodyStart, ct, cte, 2);
  if (typeof parts === "string") return fail(parts);
  if (parts.length !== 2) return fail("multipart/encrypted with 1 part, not 2");
  const [control, payload] = parts as [Part, Part];
  if (control.type !== "application/pgp-encrypted") return fail(`part 1 is ${control.type}`);
  if (text(msg, control).trim() !== "Version: 1") return fail('part 1 is not "Version: 1"');
  if (payload.type !== "application/octet-stream") return fail(`part 2 is ${payload.type}`);
  const err = checkPayload(msg, payload);
  return err ? fail(err) : { pass: true, kind: "pgp-mime" };
}

/** Part 2's OpenPGP message. Binary OpenPGP in base64 is walked while decoding, not copied. */
function checkPayload(msg: Uint8Array, p: Part): string | undefined {
  if (p.cte === "base64" && new Base64Reader(msg, p.start, p.end).read() >= 0x80) {
    const r = new Base64Reader(msg, p.start, p.end);
    const err = walkPackets(r);
    return r.malformed ? "bad base64 encoding" : err;
  }
  const b = decode(msg, p);
  return typeof b === "string" ? b : checkOpenPgpMessage(b, 0, b.length);
}

function checkSecureJoin(msg: Uint8Array, bodyStart: number, ct: ContentType | undefined, cte: Cte, header: string | null): GateVerdict {
  if (header === null) return fail("repeated Secure-Join header");
  const step = header.toLowerCase();
  if (!SECURE_JOIN_STEPS.includes(step)) return fail(`no exception for Secure-Join step ${step.slice(0, 40)}`);
  if (ct?.type !== "multipart/mixed") return fail("Secure-Join message is not multipart/mixed");
  const parts = readParts(msg, bodyStart, ct, cte, 1);
  if (typeof parts === "string") return fail(parts);
  if (parts[0]!.type !== "text/plain") return fail(`Secure-Join message with a ${parts[0]!.type} part`);
  if (text(msg, parts[0]!).trim().toLowerCase() !== `secure-join: ${step}`) return fail("Secure-Join message with other text");
  return { pass: true, kind: "secure-join" };
}

function checkBounce(msg: Uint8Array, bodyStart: number, ct: ContentType, v: (string | null | undefined)[]): GateVerdict {
  if (ct.params.get("report-type")?.toLowerCase() !== "delivery-status") return fail("multipart/report that is no delivery status");
  const auto = v[AUTO_SUBMITTED];
  if (!auto || /^no\b/i.test(auto)) return fail("delivery status without Auto-Submitted"); // RFC 3834 §5
  const from = v[FROM] ? mailbox(v[FROM]) : undefined;
  if (from?.slice(0, from.lastIndexOf("@")).toLowerCase() !== "mailer-daemon") return fail("delivery status not from mailer-daemon");
  const parts = readParts(msg, bodyStart, ct, v[CTE], 3);
  if (typeof parts === "string") return fail(parts);
  const [human, status, returned] = parts;
  if (human!.type !== "text/plain" || !status || !DSN_TYPES.includes(status.type) || (returned && !RETURNED_TYPES.includes(returned.type)))
    return fail("delivery status with unexpected parts");
  return { pass: true, kind: "bounce" };
}

interface Part {
  /** lower case */
  type: string;
  /** lower-case Content-Transfer-Encoding */
  cte: "7bit" | "8bit" | "binary" | "base64" | "quoted-printable";
  /** the encoded body in the message */
  start: number;
  end: number;
}

/** The body parts of a multipart entity, their types and transfer encodings. */
function readParts(msg: Uint8Array, bodyStart: number, ct: ContentType, cte: Cte, max: number): Part[] | string {
  if (cte === null) return "repeated Content-Transfer-Encoding";
  if (cte !== undefined && !/^(7bit|8bit|binary)$/i.test(cte)) return "multipart with a Content-Transfer-Encoding"; // RFC 2045 §6.4
  const boundary = ct.params.get("boundary");
  if (boundary === undefined || !isValidBoundary(boundary)) return "multipart without a valid boundary";
  const spans = splitMultipart(msg, bodyStart, msg.length, boundary, max);
  if (typeof spans === "string") return spans;
  const parts: Part[] = [];
  for (const s of spans) {
    const h = readHeaders(msg, s.start, s.end, PART_FIELDS);
    if (typeof h === "string") return `body part: ${h}`;
    if (h.values[CT] === null) return "body part with repeated Content-Type";
    const pct = h.values[CT] === undefined ? undefined : parseContentType(h.values[CT]);
    if (pct === null) return "body part with unparseable Content-Type";
    if (h.values[CTE] === null) return "body part with repeated Content-Transfer-Encoding";
    const cte = (h.values[CTE] ?? "7bit").toLowerCase();
    if (!CTES.includes(cte)) return `body part with unknown Content-Transfer-Encoding ${cte.slice(0, 40)}`;
    const type = pct?.type ?? "text/plain"; // RFC 2046 §5.1.1 default
    parts.push({ type, cte: cte as Part["cte"], start: h.bodyStart < 0 ? s.end : h.bodyStart, end: s.end });
  }
  return parts.length > 0 ? parts : "multipart without body parts";
}

const CTES = ["7bit", "8bit", "binary", "base64", "quoted-printable"];

/** Undoes the Content-Transfer-Encoding (RFC 2045 §6): identity encodings return the message's
 * bytes; base64 and quoted-printable decode into a new buffer (real encrypted mail uses 7bit). */
function decode(msg: Uint8Array, p: Part): Uint8Array | string {
  if (p.cte === "base64") return decodeBase64(msg, p.start, p.end) ?? "bad base64 encoding";
  if (p.cte === "quoted-printable") return decodeQuotedPrintable(msg, p.start, p.end) ?? "bad quoted-printable encoding";
  return msg.subarray(p.start, p.end);
}

/** A short part's text; every text the gate accepts is short, so a long one reads as "". */
function text(msg: Uint8Array, p: Part): string {
  if (p.end - p.start > 1024) return "";
  const b = decode(msg, p);
  return typeof b === "string" || b.length > 256 ? "" : latin1(b, 0, b.length);
}

/** The address of a From field holding exactly one mailbox: "Name <a@b>", "a@b (Name)" or "a@b". */
function mailbox(value: string): string | undefined {
  const noComments = (t: string) => t.replace(/\([^()]*\)/g, "").trim();
  let addr = noComments(value);
  const lt = value.indexOf("<");
  if (lt >= 0) {
    const gt = value.indexOf(">", lt);
    if (gt < 0 || /[<@,]/.test(value.slice(0, lt)) || noComments(value.slice(gt + 1)) !== "") return undefined;
    addr = value.slice(lt + 1, gt).trim();
  }
  return /^[^\s<>,;:"@()]+@[^\s<>,;:"@()]+$/.test(addr) ? addr : undefined;
}

function decodeBase64(buf: Uint8Array, start: number, end: number): Uint8Array | undefined {
  const r = new Base64Reader(buf, start, end);
  const out = new Uint8Array(Math.ceil(((end - start) * 3) / 4));
  let n = 0;
  for (let b = r.read(); b >= 0; b = r.read()) out[n++] = b;
  return r.malformed ? undefined : out.subarray(0, n);
}

/** RFC 2045 §6.7, strict: "=XX" with hex digits or a soft line break "=" at the end of a line;
 * trailing whitespace is dropped; any other "=" is an error. */
function decodeQuotedPrintable(buf: Uint8Array, start: number, end: number): Uint8Array | undefined {
  const out = new Uint8Array(end - start);
  let n = 0;
  for (let pos = start; pos < end; ) {
    let nl = buf.indexOf(10, pos);
    if (nl < 0 || nl > end) nl = end;
    const crlf = nl > pos && buf[nl - 1] === 13;
    let e = crlf ? nl - 1 : nl;
    while (e > pos && (buf[e - 1] === 32 || buf[e - 1] === 9)) e--;
    let soft = false;
    for (let i = pos; i < e; i++) {
      if (buf[i] !== 61) out[n++] = buf[i]!;
      else if (i === e - 1) soft = true;
      else {
        if (i + 2 >= e) return undefined;
        const hex = String.fromCharCode(buf[i + 1]!, buf[i + 2]!);
        if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
        out[n++] = parseInt(hex, 16);
        i += 2;
      }
    }
    if (nl < end && !soft) {
      if (crlf) out[n++] = 13;
      out[n++] = 10;
    }
    pos = nl + 1;
  }
  return out.subarray(0, n);
}

function fail(reason: string): GateVerdict {
  return { pass: false, reason };
}
