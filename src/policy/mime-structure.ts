// Just enough RFC 5322 / RFC 2045-2046 parsing for the encryption gate: one header block at a
// time, Content-Type and multipart splitting, all on byte offsets into the message so nothing
// big is copied. Anything ambiguous is an error string, never a guess: a gate that reads a
// message differently from the recipient's client can be walked around.

export interface Span {
  start: number;
  end: number;
}

export interface HeaderBlock {
  /** Unfolded, trimmed values of the wanted fields, in the order asked for:
   * undefined when absent, null when the field occurs more than once. */
  values: (string | null | undefined)[];
  /** First body byte; -1 when no empty line ends the header block. */
  bodyStart: number;
}

const LF = 10;
const CR = 13;
const SP = 32;
const HT = 9;

/** Reads the header block at buf[start, end). `wanted` are lower-case field names; names are
 * compared case-insensitively (RFC 5322 §1.2.2) and only wanted values are decoded (as latin1). */
export function readHeaders(buf: Uint8Array, start: number, end: number, wanted: readonly string[]): HeaderBlock | string {
  const values: (string | null | undefined)[] = new Array<undefined>(wanted.length);
  let field = -1; // start of the current field
  let colon = -1;
  let fieldEnd = -1; // end of the current field's last line, without its line break
  const finish = (): string | undefined => {
    if (field < 0) return undefined;
    let nameEnd = colon;
    while (nameEnd > field && (buf[nameEnd - 1] === SP || buf[nameEnd - 1] === HT)) nameEnd--; // obs-optional (RFC 5322 §4.5.3)
    if (nameEnd === field) return "header line without a field name";
    for (let i = field; i < nameEnd; i++) if (buf[i]! < 33 || buf[i]! > 126) return "bad character in a header field name";
    for (let w = 0; w < wanted.length; w++) {
      if (!equalsLower(buf, field, nameEnd, wanted[w]!)) continue;
      // Not every parser knows the obsolete "Name :" form: for a field that decides, refuse it.
      if (nameEnd !== colon) return `whitespace before the colon of ${wanted[w]}`;
      values[w] = values[w] === undefined ? unfold(buf, colon + 1, fieldEnd) : null;
      break;
    }
    return undefined;
  };
  let pos = start;
  while (pos < end) {
    let nl = buf.indexOf(LF, pos);
    if (nl < 0 || nl > end) nl = end;
    const lineEnd = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl;
    if (lineEnd === pos) {
      const err = finish();
      return err ?? { values, bodyStart: Math.min(nl + 1, end) };
    }
    const c = buf[pos];
    if (c === SP || c === HT) {
      if (field < 0) return "header block starts with a continuation line";
      // Some parsers end the header block at a whitespace-only line, others fold it: refuse.
      if (isBlank(buf, pos, lineEnd)) return "whitespace-only line in a header block";
      fieldEnd = lineEnd;
    } else {
      const err = finish();
      if (err) return err;
      colon = buf.indexOf(58, pos);
      if (colon < 0 || colon >= lineEnd) return "header line without a colon";
      field = pos;
      fieldEnd = lineEnd;
    }
    pos = nl + 1;
  }
  return finish() ?? { values, bodyStart: -1 };
}

export interface ContentType {
  /** "type/subtype", lower case */
  type: string;
  /** parameter names lower case; values unquoted */
  params: Map<string, string>;
}

/** Parameters the gate relies on: an RFC 2231 variant (`boundary*0=`) would let two parsers pick
 * different values, so it makes the header unparseable. */
const DECIDING_PARAMS = ["boundary", "protocol", "report-type"];

/** RFC 2045 §5.1, with RFC 822 comments and whitespace between tokens. null when malformed or
 * when a parameter is repeated (first-wins and last-wins parsers would disagree). */
export function parseContentType(value: string): ContentType | null {
  const cur = { s: value, i: 0 };
  const type = readToken(cur);
  if (!type || !skipCfws(cur) || value.charCodeAt(cur.i) !== 47) return null;
  cur.i++;
  skipCfws(cur);
  const sub = readToken(cur);
  if (!sub) return null;
  const params = new Map<string, string>();
  for (;;) {
    if (!skipCfws(cur)) return null;
    if (cur.i >= value.length) break;
    if (value.charCodeAt(cur.i) !== 59) return null; // ';'
    cur.i++;
    if (!skipCfws(cur)) return null;
    if (cur.i >= value.length) break; // a trailing ';' is common and harmless
    const name = readToken(cur)?.toLowerCase();
    if (!name || !skipCfws(cur) || value.charCodeAt(cur.i) !== 61) return null; // '='
    cur.i++;
    if (!skipCfws(cur)) return null;
    const v = value.charCodeAt(cur.i) === 34 ? readQuoted(cur) : readToken(cur);
    if (v === undefined || params.has(name)) return null;
    const star = name.indexOf("*");
    if (star >= 0 && DECIDING_PARAMS.includes(name.slice(0, star))) return null;
    params.set(name, v);
  }
  return { type: `${type}/${sub}`.toLowerCase(), params };
}

/** RFC 2046 §5.1.1: 1-70 characters from bchars, not ending in a space. */
export function isValidBoundary(b: string): boolean {
  return b.length >= 1 && b.length <= 70 && /^[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]$/.test(b);
}

/** Preamble and epilogue are invisible in clients but are a place to park plaintext; encryptors
 * write one short sentence there at most (GnuPG/Enigmail) or nothing (Delta Chat). */
export const MAX_PREAMBLE = 1024;

/** Splits the multipart body buf[start, end) on `boundary` (RFC 2046 §5.1.1). A delimiter is a
 * whole line "--boundary" or "--boundary--" plus optional transport padding (SP/HT); the line
 * break before it belongs to it. Fails on any other line that starts with "--boundary" (the RFC
 * forbids such lines, and prefix-matching parsers would see an extra part), on a missing close
 * delimiter, on more than `maxParts` parts and on a preamble or epilogue over MAX_PREAMBLE bytes. */
export function splitMultipart(buf: Uint8Array, start: number, end: number, boundary: string, maxParts: number): Span[] | string {
  const parts: Span[] = [];
  const blen = boundary.length;
  let partStart = -1;
  let closedAt = -1;
  // Only lines starting with "-" matter, and base64 has no "-": jump between them natively.
  for (let pos = buf.indexOf(45, start); pos >= 0 && pos < end; pos = buf.indexOf(45, pos + 1)) {
    if (pos > start && buf[pos - 1] !== LF) continue;
    let nl = buf.indexOf(LF, pos);
    if (nl < 0 || nl > end) nl = end;
    const lineEnd = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl;
    if (lineEnd - pos >= blen + 2 && buf[pos + 1] === 45 && matchesAt(buf, pos + 2, boundary)) {
      if (closedAt >= 0) return "boundary line after the close delimiter";
      let k = pos + 2 + blen;
      const close = k + 1 < lineEnd && buf[k] === 45 && buf[k + 1] === 45;
      if (close) k += 2;
      while (k < lineEnd && (buf[k] === SP || buf[k] === HT)) k++;
      if (k !== lineEnd) return "line starts with the boundary but is no delimiter";
      let before = pos; // the line break before the delimiter is part of it
      if (before > start && buf[before - 1] === LF) before--;
      if (before > start && buf[before - 1] === CR) before--;
      if (partStart < 0) {
        if (before - start > MAX_PREAMBLE) return "preamble too long";
        if (close) return "close delimiter before the first part";
      } else {
        parts.push({ start: partStart, end: Math.max(partStart, before) });
        if (parts.length > maxParts) return `more than ${maxParts} body part${maxParts === 1 ? "" : "s"}`;
      }
      if (close) {
        closedAt = Math.min(nl + 1, end);
        if (end - closedAt > MAX_PREAMBLE) return "epilogue too long";
      }
      partStart = Math.min(nl + 1, end);
    }
    pos = nl;
  }
  return closedAt < 0 ? "no close delimiter" : parts;
}

/** Bytes as latin1 text (for the few small bodies the gate reads as text). */
export function latin1(buf: Uint8Array, start: number, end: number): string {
  return LATIN1.decode(buf.subarray(start, end));
}

// ---- internal ----

function equalsLower(buf: Uint8Array, s: number, e: number, lower: string): boolean {
  if (e - s !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    let c = buf[s + i]!;
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

function matchesAt(buf: Uint8Array, at: number, s: string): boolean {
  for (let i = 0; i < s.length; i++) if (buf[at + i] !== s.charCodeAt(i)) return false;
  return true;
}

function isBlank(buf: Uint8Array, s: number, e: number): boolean {
  for (let i = s; i < e; i++) if (buf[i] !== SP && buf[i] !== HT) return false;
  return true;
}

const LATIN1 = new TextDecoder("latin1");

/** Field body without its line breaks (RFC 5322 §2.2.3 unfolding), trimmed. */
function unfold(buf: Uint8Array, s: number, e: number): string {
  const v = LATIN1.decode(buf.subarray(s, e));
  return (v.includes("\n") ? v.replace(/\r?\n/g, "") : v).trim();
}

interface Cursor {
  s: string;
  i: number;
}

/** Skips whitespace and (nested, escaped) comments; false on an unterminated comment. */
function skipCfws(cur: Cursor): boolean {
  const s = cur.s;
  while (cur.i < s.length) {
    const c = s.charCodeAt(cur.i);
    if (c === SP || c === HT || c === CR || c === LF) cur.i++;
    else if (c === 40) {
      let depth = 0;
      for (; cur.i < s.length; cur.i++) {
        const d = s.charCodeAt(cur.i);
        if (d === 92) cur.i++;
        else if (d === 40) depth++;
        else if (d === 41 && --depth === 0) break;
      }
      if (cur.i >= s.length) return false;
      cur.i++;
    } else break;
  }
  return true;
}

/** RFC 2045 token characters: printable ASCII except SPACE and tspecials. */
const TOKEN = new Uint8Array(128);
for (let c = 33; c < 127; c++) TOKEN[c] = '()<>@,;:\\"/[]?='.includes(String.fromCharCode(c)) ? 0 : 1;

function readToken(cur: Cursor): string | undefined {
  const s = cur.s;
  const from = cur.i;
  while (cur.i < s.length && TOKEN[s.charCodeAt(cur.i)] === 1) cur.i++;
  return cur.i > from ? s.slice(from, cur.i) : undefined;
}

function readQuoted(cur: Cursor): string | undefined {
  const s = cur.s;
  let v = "";
  for (cur.i++; cur.i < s.length; cur.i++) {
    const c = s[cur.i]!;
    if (c === '"') {
      cur.i++;
      return v;
    }
    if (c === "\\") cur.i++;
    if (cur.i < s.length) v += s[cur.i];
  }
  return undefined;
}
