// Delivery status notifications (RFC 3464 inside an RFC 6522 multipart/report) for mail from a
// local sender that failed or is late. The bounce must pass our own encryption gate on the way
// in (src/policy/pgp-gate.ts, "bounce"): multipart/report; report-type=delivery-status, one
// Auto-Submitted, one From with local part mailer-daemon, then text/plain,
// message/delivery-status and the returned headers. Only the original header block is returned,
// never the body: it is (or should have been) encrypted and must not travel again in a bounce.
//
// The caller sends the result with an empty envelope sender (MAIL FROM:<>, RFC 5321 §4.5.5) and
// only to local senders (DESIGN.md §5). Every text from outside (addresses, remote replies) is
// stripped of control characters and folded, so nothing in it can start a header line or a
// delimiter; the boundary is random and checked against everything it encloses.
import { domainToASCII } from "node:url";
import { normaliseDomain } from "../util/names.ts";

export interface DsnRecipient {
  address: string;
  action: "failed" | "delayed";
  /** RFC 3463 enhanced status, e.g. 5.1.1 or 4.4.1; a malformed one becomes 5.0.0 / 4.0.0. */
  status: string;
  /** "type; text", e.g. "smtp; 550 5.1.1 user unknown", "http; 404 bad request". Without a
   * type it is reported as "X-Madmail; text". */
  diagnostic?: string;
  /** Host name (or URL) of the peer that answered. */
  remoteMta?: string;
  lastAttemptDate?: Date;
  /** With "delayed": when the queue gives up (RFC 3464 §2.3.9). */
  willRetryUntil?: Date;
}

export interface DsnInput {
  /** Our host name (Reporting-MTA: dns; host). */
  reportingHost: string;
  /** Envelope sender of the failed message, a local address; the DSN goes to it. */
  originalFrom: string;
  /** The failed message; only its header block is returned. */
  originalMessage: Uint8Array;
  /** Our queue id, reported as X-Madmail-Queue-ID. */
  queueId: string;
  /** The sender's ENVID (RFC 3461), if it gave one: Original-Envelope-Id is only for that. */
  envelopeId?: string;
  arrivalDate: Date;
  recipients: DsnRecipient[];
  now?: Date;
}

/** Returned header blocks are cut (at a line) beyond this: a bounce is no place for megabytes. */
export const MAX_RETURNED_HEADERS = 64 * 1024;
/** Remote replies are cut beyond this many characters. */
const MAX_DIAGNOSTIC = 2000;

/** Builds the whole DSN message (RFC 5322, CRLF line ends). */
export function buildDsn(input: DsnInput): Uint8Array {
  const now = input.now ?? new Date();
  const host = asciiHost(input.reportingHost) || "localhost";
  const sender = clean(input.originalFrom).replace(/[\s<>]/g, "");
  const failed = input.recipients.some((r) => r.action === "failed");
  const human = humanText(input, host);
  const status = statusFields(input, host);
  const returned = returnedHeaders(input.originalMessage);
  const eightBit = (s: string) => /[^\x00-\x7f]/.test(s);
  const headers8 = returned.some((b) => b >= 0x80);
  const boundary = pickBoundary([human, status, latin1(returned)]);

  const top = [
    field("From", `Mail Delivery System <mailer-daemon@${senderDomain(sender) ?? host}>`),
    field("To", `<${sender}>`),
    field("Subject", failed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)"),
    field("Date", rfc5322Date(now)),
    field("Message-ID", `<${now.getTime().toString(36)}.${randomHex(12)}@${host}>`),
    // RFC 3834 §5: keeps vacation responders and other bots from answering the bounce.
    field("Auto-Submitted", "auto-replied"),
    field("MIME-Version", "1.0"),
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"\r\n`,
    eightBit(human) || headers8 ? "Content-Transfer-Encoding: 8bit\r\n" : "",
    "\r\n",
    "This is a MIME-encapsulated message.\r\n",
  ].join("");
  const parts = [
    `\r\n--${boundary}\r\n` +
      "Content-Description: Notification\r\n" +
      "Content-Type: text/plain; charset=utf-8\r\n" +
      `Content-Transfer-Encoding: ${eightBit(human) ? "8bit" : "7bit"}\r\n\r\n` +
      human,
    `\r\n--${boundary}\r\n` + "Content-Description: Delivery report\r\n" + "Content-Type: message/delivery-status\r\n\r\n" + status,
    `\r\n--${boundary}\r\n` +
      "Content-Description: Undelivered Message Headers\r\n" +
      // RFC 6533 §6.3: a header block with raw UTF-8 is message/global-headers.
      (headers8 ? "Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" : "Content-Type: text/rfc822-headers\r\n\r\n"),
  ];
  const enc = new TextEncoder();
  return concat([enc.encode(top + parts.join("")), returned, enc.encode(`\r\n--${boundary}--\r\n`)]);
}

// ---- the three parts ----

function humanText(input: DsnInput, host: string): string {
  const out: string[] = [`This is the mail system at ${host}.`, ""];
  for (const action of ["failed", "delayed"] as const) {
    const rcpts = input.recipients.filter((r) => r.action === action);
    if (!rcpts.length) continue;
    const n = rcpts.length === 1 ? "1 recipient" : `${rcpts.length} recipients`;
    out.push(
      ...wrap(
        action === "failed"
          ? `Your message could not be delivered to ${n}. The mail system has given up on ${rcpts.length === 1 ? "this address" : "these addresses"}; sending the same message again will most likely fail the same way.`
          : `Your message has not been delivered yet to ${n}. The mail system is still trying; you do not need to send it again. You will get another notice if it finally fails.`,
      ),
      "",
    );
    for (const r of rcpts) {
      out.push(`<${clean(r.address)}>`);
      out.push(...wrap(`${explain(r)}.`, "  "));
      const reply = r.diagnostic && clean(r.diagnostic).replace(/^[A-Za-z][A-Za-z0-9-]*\s*;\s*/, "").slice(0, MAX_DIAGNOSTIC);
      const peer = r.remoteMta && remoteMta(r.remoteMta)?.replace(/^dns; /, "");
      if (reply) out.push(...wrap(`${peer ? `The server ${peer} said` : "The reason given"}: ${reply}`, "  "));
      if (r.action === "delayed" && r.willRetryUntil) out.push(`  It will be retried until ${rfc5322Date(r.willRetryUntil)}.`);
      out.push("");
    }
  }
  out.push(...wrap("The headers of your message are attached below; its content is not included."));
  out.push(`Queue ID: ${clean(input.queueId)}, received ${rfc5322Date(input.arrivalDate)}.`, "");
  return out.join("\r\n");
}

/** The message/delivery-status body (RFC 3464 §2.2, §2.3), all ASCII. */
function statusFields(input: DsnInput, host: string): string {
  let s = field("Reporting-MTA", `dns; ${host}`);
  if (input.envelopeId) s += field("Original-Envelope-Id", ascii(input.envelopeId).replace(/\s/g, ""));
  s += field("X-Madmail-Queue-ID", ascii(input.queueId));
  s += field("Arrival-Date", rfc5322Date(input.arrivalDate));
  for (const r of input.recipients) {
    s += "\r\n" + field("Final-Recipient", typedAddress(r.address));
    s += field("Action", r.action);
    s += field("Status", /^[245]\.\d{1,3}\.\d{1,3}$/.test(r.status) ? r.status : r.action === "failed" ? "5.0.0" : "4.0.0");
    const mta = r.remoteMta && remoteMta(r.remoteMta);
    if (mta) s += field("Remote-MTA", mta);
    if (r.diagnostic) s += field("Diagnostic-Code", diagnosticCode(r.diagnostic));
    if (r.lastAttemptDate) s += field("Last-Attempt-Date", rfc5322Date(r.lastAttemptDate));
    if (r.action === "delayed" && r.willRetryUntil) s += field("Will-Retry-Until", rfc5322Date(r.willRetryUntil));
  }
  return s;
}

/** The original header block, CRLF-terminated lines, as bytes. A line ends at CRLF, LF or a
 * lone CR (some readers take that for a line break too). The block ends at the first empty or
 * whitespace-only line, or at the first line that is no header line: parsers disagree on where
 * a malformed header block ends, and whatever comes after might be body. */
function returnedHeaders(msg: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let pos = 0; pos < msg.length; ) {
    let end = pos;
    while (end < msg.length && msg[end] !== 10 && msg[end] !== 13) end++;
    const line = msg.subarray(pos, end);
    if (line.every((b) => b === 32 || b === 9)) break;
    if (line[0] === 32 || line[0] === 9) {
      if (!out.length) break;
    } else {
      const colon = line.indexOf(58);
      if (colon < 1 || line.subarray(0, colon).some((b) => b < 33 || b > 126)) break;
    }
    if (out.length + line.length + 2 > MAX_RETURNED_HEADERS) break;
    for (const b of line) if (b !== 0) out.push(b); // NUL: RFC 5322 §4.1 obsolete, unsafe to pass on
    out.push(13, 10);
    pos = msg[end] === 13 && msg[end + 1] === 10 ? end + 2 : end + 1;
  }
  return Uint8Array.from(out);
}

// ---- fields ----

/** "Name: value" folded at spaces to 78 columns where it can (RFC 5322 §2.1.1). A word too long
 * for one line (998 octets) is cut into pieces on lines of their own: unfolded, it reads with
 * spaces in it, which beats a line a relay may refuse. */
function field(name: string, value: string): string {
  const pieces = clean(value)
    .split(" ")
    .filter(Boolean)
    .flatMap((w) => chunks(w, /^[\x00-\x7f]*$/.test(w) ? 900 : 200)); // UTF-8: up to 4 octets each
  let out = `${name}:`;
  let lineLength = out.length;
  for (const [i, p] of pieces.entries()) {
    if (i > 0 && lineLength + 1 + p.length > 78) {
      out += "\r\n";
      lineLength = 0;
    }
    out += ` ${p}`;
    lineLength += 1 + p.length;
  }
  return out + "\r\n";
}

function chunks(word: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < word.length; i += size) out.push(word.slice(i, i + size));
  return out;
}

/** RFC 3464 §2.3.2 with RFC 6533 §3: `rfc822; a@b` when ASCII, else `utf-8;` in the
 * utf-8-addr-xtext form (\x{HEX} for anything that is no QCHAR), so the part stays 7-bit. */
function typedAddress(address: string): string {
  const a = clean(address).replace(/\s/g, "");
  if (/^[\x21-\x7e]*$/.test(a)) return `rfc822; ${a}`;
  let x = "";
  for (const c of a) x += /[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]/.test(c) ? c : `\\x{${c.codePointAt(0)!.toString(16).toUpperCase()}}`;
  return `utf-8; ${x}`;
}

function diagnosticCode(diagnostic: string): string {
  const d = clean(diagnostic);
  const m = /^([A-Za-z][A-Za-z0-9-]*)\s*;\s*(.*)$/.exec(d);
  const [type, text] = m ? [m[1]!, m[2]!] : ["X-Madmail", d];
  return `${type}; ${ascii(text).slice(0, MAX_DIAGNOSTIC)}`;
}

/** `dns; host` (RFC 3464 §2.3.5) from a host, host:port or URL. */
function remoteMta(value: string): string | undefined {
  if (/^[A-Za-z][A-Za-z0-9-]*\s*;/.test(value)) return ascii(value);
  let h = value.trim();
  if (h.includes("://")) h = URL.canParse(h) ? new URL(h).hostname : "";
  else if (/^[^:]+:\d+$/.test(h)) h = h.slice(0, h.indexOf(":"));
  h = asciiHost(h);
  return h ? `dns; ${h}` : undefined;
}

function senderDomain(address: string): string | undefined {
  const at = address.lastIndexOf("@");
  return at > 0 ? (normaliseDomain(address.slice(at + 1)) ?? undefined) : undefined;
}

// ---- text ----

/** Control characters (C0, DEL, C1, line/paragraph separators) become spaces; runs of
 * whitespace collapse. Nothing from outside can break a line after this. */
function clean(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]+/g, " ").replace(/ {2,}/g, " ").trim();
}

/** clean() and then ASCII only: what does not fit becomes "?". */
function ascii(s: string): string {
  return clean(s).replace(/[^\x20-\x7e]/gu, "?");
}

function asciiHost(h: string): string {
  const c = clean(h).replace(/\s/g, "");
  return (/[^\x00-\x7f]/.test(c) ? domainToASCII(c.toLowerCase()) : c) || ascii(c);
}

/** Word wrap at 76 columns (long words are cut), each line prefixed with indent. */
function wrap(text: string, indent = ""): string[] {
  const width = 76 - indent.length;
  const lines: string[] = [];
  let line = "";
  for (let w of text.split(" ").filter(Boolean)) {
    while (w.length > width) {
      if (line) lines.push(line);
      lines.push(w.slice(0, width));
      w = w.slice(width);
      line = "";
    }
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = "";
    }
    line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines.map((l) => indent + l);
}

const SUBJECTS: Record<string, string> = {
  "1": "There is a problem with the address",
  "2": "There is a problem with the recipient's mailbox",
  "3": "The receiving mail system has a problem",
  "4": "There is a network or routing problem",
  "5": "The receiving server did not understand the mail protocol exchange",
  "6": "The receiving server could not handle the message content",
  "7": "The receiving server refused it by a security or policy rule",
};
const DETAILS: Record<string, string> = {
  "1.1": "This address does not exist at the destination",
  "1.2": "The destination domain does not exist or does not accept mail",
  "1.10": "The destination domain does not accept mail",
  "2.1": "The recipient's mailbox is disabled",
  "2.2": "The recipient's mailbox is full",
  "3.4": "The message is too big for the receiving server",
  "4.1": "The receiving server did not answer",
  "4.2": "The connection to the receiving server broke off",
  "4.4": "No mail server could be found for the destination",
  "4.7": "It could not be delivered in time and the mail system stopped trying",
};

/** The status code in plain words (RFC 3463 subjects and the most common details). */
function explain(r: DsnRecipient): string {
  const m = /^[245]\.(\d{1,3})\.(\d{1,3})$/.exec(r.status);
  return (m && (DETAILS[`${m[1]}.${m[2]}`] ?? SUBJECTS[m[1]!])) || (r.action === "failed" ? "The receiving side refused it" : "It could not be delivered yet");
}

// ---- bytes ----

/** RFC 5322 §3.3 date-time in UTC. */
function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, "+0000");
}

function pickBoundary(contents: string[]): string {
  for (;;) {
    const b = `=_madmail_dsn_${randomHex(16)}`;
    if (!contents.some((c) => c.includes(b))) return b;
  }
}

function randomHex(n: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function latin1(b: Uint8Array): string {
  return new TextDecoder("latin1").decode(b);
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
