// The PGP gate (DESIGN.md §4): is an inbound message end-to-end encrypted? It looks only at the
// top-level headers and the MIME/OpenPGP structure, never decrypts, and fails closed: whatever
// is not clearly one of the three accepted shapes is refused.
//
// 1. "pgp-mime" (RFC 3156 §4): multipart/encrypted; protocol="application/pgp-encrypted" with
//    exactly two parts, application/pgp-encrypted whose body is "Version: 1", then
//    application/octet-stream holding an OpenPGP message (see openpgp-packets.ts).
// 2. "secure-join": the unencrypted first step of a Secure-Join handshake, as the chatmail relay
//    filter allows it: `Secure-Join: vc-request|vg-request`, multipart/mixed with exactly one
//    text/plain part whose whole text is "secure-join: <the same step>". Later steps (vc-auth...)
//    are encrypted by Delta Chat and get no exception.
// 3. "bounce" (RFC 3464/6522): multipart/report; report-type=delivery-status from a mailer-daemon
//    address with Auto-Submitted, parts text/plain, message/delivery-status and optionally the
//    returned message or its headers.
import { type Body, type ContentType, decodeBody, isValidBoundary, latin1, parseContentType, readHeaders, splitMultipart } from "./mime-structure.ts";
import { checkOpenPgpMessage } from "./openpgp-packets.ts";

export type GateVerdict = { pass: true; kind: "pgp-mime" | "secure-join" | "bounce" } | { pass: false; reason: string };

const TOP_FIELDS = ["content-type", "content-transfer-encoding", "secure-join", "auto-submitted", "from"] as const;
const PART_FIELDS = ["content-type", "content-transfer-encoding"] as const;
const [CT, CTE, SECURE_JOIN, AUTO_SUBMITTED, FROM] = [0, 1, 2, 3, 4];

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
  const type = ct?.type ?? "text/plain";
  if (top.bodyStart < 0) return fail("message has no body");
  if (type === "multipart/encrypted") return checkPgpMime(message, top.bodyStart, ct!, v[CTE]);
  if (v[SECURE_JOIN] !== undefined) return checkSecureJoin(message, top.bodyStart, ct, v[CTE], v[SECURE_JOIN]);
  if (type === "multipart/report") return checkBounce(message, top.bodyStart, ct!, v);
  return fail(`not encrypted (${type})`);
}

function checkPgpMime(msg: Uint8Array, bodyStart: number, ct: ContentType, cte: string | null | undefined): GateVerdict {
  if (ct.params.get("protocol")?.toLowerCase() !== "application/pgp-encrypted")
    return fail("multipart/encrypted without protocol=application/pgp-encrypted");
  const parts = readParts(msg, bodyStart, ct, cte, 2);
  if (typeof parts === "string") return fail(parts);
  if (parts.length !== 2) return fail(`multipart/encrypted with ${parts.length} part(s), not 2`);
  const [control, payload] = parts as [Part, Part];
  if (control.type !== "application/pgp-encrypted") return fail(`part 1 is ${control.type}`);
  if (text(control.body).trim() !== "Version: 1") return fail("part 1 is not \"Version: 1\"");
  if (payload.type !== "application/octet-stream") return fail(`part 2 is ${payload.type}`);
  const b = payload.body;
  const err = checkOpenPgpMessage(b.buf, b.start, b.end);
  return err ? fail(err) : { pass: true, kind: "pgp-mime" };
}

function checkSecureJoin(
  msg: Uint8Array,
  bodyStart: number,
  ct: ContentType | undefined,
  cte: string | null | undefined,
  header: string | null,
): GateVerdict {
  const step = header?.toLowerCase();
  if (step === undefined || !SECURE_JOIN_STEPS.includes(step)) return fail("Secure-Join step without an exception");
  if (ct?.type !== "multipart/mixed") return fail("Secure-Join message is not multipart/mixed");
  const parts = readParts(msg, bodyStart, ct, cte, 1);
  if (typeof parts === "string") return fail(parts);
  if (parts.length !== 1 || parts[0]!.type !== "text/plain") return fail("Secure-Join message is not one text/plain part");
  if (text(parts[0]!.body).trim().toLowerCase() !== `secure-join: ${step}`) return fail("Secure-Join message with other text");
  return { pass: true, kind: "secure-join" };
}

function checkBounce(msg: Uint8Array, bodyStart: number, ct: ContentType, v: (string | null | undefined)[]): GateVerdict {
  if (ct.params.get("report-type")?.toLowerCase() !== "delivery-status") return fail("multipart/report is not a delivery status");
  const auto = v[AUTO_SUBMITTED];
  if (typeof auto !== "string" || /^no\b/i.test(auto) || auto === "") return fail("report without Auto-Submitted");
  const from = typeof v[FROM] === "string" ? mailbox(v[FROM]) : undefined;
  if (from?.slice(0, from.lastIndexOf("@")).toLowerCase() !== "mailer-daemon") return fail("report not from mailer-daemon");
  const parts = readParts(msg, bodyStart, ct, v[CTE], 3);
  if (typeof parts === "string") return fail(parts);
  const [human, status, returned] = parts;
  if (parts.length < 2 || human!.type !== "text/plain" || !DSN_TYPES.includes(status!.type) || (returned && !RETURNED_TYPES.includes(returned.type)))
    return fail("delivery status report with unexpected parts");
  return { pass: true, kind: "bounce" };
}

interface Part {
  type: string;
  body: Body;
}

/** The body parts of a multipart entity with their (lower-case) types and decoded bodies. */
function readParts(msg: Uint8Array, bodyStart: number, ct: ContentType, cte: string | null | undefined, max: number): Part[] | string {
  if (cte !== undefined && !/^(7bit|8bit|binary)$/i.test(cte ?? "")) return "multipart with a Content-Transfer-Encoding"; // RFC 2045 §6.4
  const boundary = ct.params.get("boundary");
  if (boundary === undefined || !isValidBoundary(boundary)) return "multipart without a valid boundary";
  const spans = splitMultipart(msg, bodyStart, msg.length, boundary, max);
  if (typeof spans === "string") return spans;
  const parts: Part[] = [];
  for (const s of spans) {
    const h = readHeaders(msg, s.start, s.end, PART_FIELDS);
    if (typeof h === "string") return `body part: ${h}`;
    const pv = h.values;
    if (pv[CT] === null) return "body part with repeated Content-Type";
    const pct = pv[CT] === undefined ? undefined : parseContentType(pv[CT]);
    if (pct === null) return "body part with unparseable Content-Type";
    const body = decodeBody(msg, h.bodyStart < 0 ? s.end : h.bodyStart, s.end, pv[CTE]);
    if (typeof body === "string") return `body part: ${body}`;
    parts.push({ type: pct?.type ?? "text/plain", body }); // RFC 2046 §5.1: default text/plain
  }
  return parts;
}

function text(b: Body): string {
  return b.end - b.start > 256 ? "" : latin1(b.buf, b.start, b.end); // every text the gate accepts is short
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

function fail(reason: string): GateVerdict {
  return { pass: false, reason };
}
