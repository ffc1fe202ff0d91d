import { describe, expect, test } from "bun:test";
import { buildDsn, MAX_RETURNED_HEADERS, type DsnInput } from "../../src/queue/dsn.ts";
import { checkEncryption } from "../../src/policy/pgp-gate.ts";

const enc = new TextEncoder();
const utf8 = (b: Uint8Array) => new TextDecoder().decode(b);

const ORIGINAL_CRLF =
  "From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: [...]\r\nMessage-ID: <m1@a.test>\r\n" +
  "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"enc\"\r\n" +
  "\r\n--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--enc\r\n" +
  "Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nSECRET-CIPHERTEXT-LINE\r\n-----END PGP MESSAGE-----\r\n--enc--\r\n";
const ORIGINAL_LF = ORIGINAL_CRLF.replace(/\r\n/g, "\n");

function input(over: Partial<DsnInput> = {}): DsnInput {
  return {
    reportingHost: "mx.a.test",
    originalFrom: "alice@a.test",
    originalMessage: enc.encode(ORIGINAL_CRLF),
    queueId: "Q0123456789",
    arrivalDate: new Date("2026-11-20T10:00:00Z"),
    recipients: [
      { address: "bob@b.test", action: "failed", status: "5.1.1", diagnostic: "smtp; 550 5.1.1 user unknown", remoteMta: "mx.b.test", lastAttemptDate: new Date("2026-11-20T10:05:00Z") },
    ],
    now: new Date("2026-11-20T10:05:01Z"),
    ...over,
  };
}

interface Entity {
  /** raw header block (CRLF lines) */
  head: string;
  /** unfolded fields, names lower case, in order */
  fields: [string, string][];
  body: string;
}

/** Independent of the gate's parser: splits a header block and body at the first CRLF CRLF. */
function entity(text: string): Entity {
  const end = text.indexOf("\r\n\r\n");
  const head = end < 0 ? text : text.slice(0, end + 2);
  const body = end < 0 ? "" : text.slice(end + 4);
  const fields: [string, string][] = [];
  for (const line of head.split("\r\n").filter(Boolean)) {
    if (/^[ \t]/.test(line)) fields[fields.length - 1]![1] += line;
    else {
      const colon = line.indexOf(":");
      fields.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1)]);
    }
  }
  return { head, fields: fields.map(([n, v]) => [n, v.trim()]), body };
}

const get = (e: Entity, name: string) => e.fields.filter(([n]) => n === name).map(([, v]) => v);

function parse(msg: Uint8Array) {
  const text = utf8(msg);
  const top = entity(text);
  const ct = get(top, "content-type")[0]!;
  const boundary = /boundary="([^"]+)"/.exec(ct)![1]!;
  const pieces = top.body.split(`\r\n--${boundary}`);
  const preamble = pieces.shift()!;
  const last = pieces.pop()!;
  expect(last).toBe("--\r\n"); // close delimiter, no epilogue
  const parts = pieces.map((p) => {
    expect(p.startsWith("\r\n")).toBe(true);
    return entity(p.slice(2));
  });
  return { text, top, boundary, preamble, parts };
}

/** The message/delivery-status body: per-message fields, then one group per recipient. */
function statusGroups(body: string): Entity[] {
  return body
    .replace(/\r\n$/, "")
    .split("\r\n\r\n")
    .map((g) => entity(g + "\r\n\r\n"));
}

function expectWellFormed(msg: Uint8Array) {
  for (let i = 0; i < msg.length; i++) {
    if (msg[i] === 10) expect(msg[i - 1]).toBe(13);
    if (msg[i] === 13) expect(msg[i + 1]).toBe(10);
  }
  const lines = latin1(msg).split("\r\n");
  for (const l of lines) expect(l.length).toBeLessThanOrEqual(998);
}
const latin1 = (b: Uint8Array) => new TextDecoder("latin1").decode(b);

describe("the encryption gate lets our bounces through", () => {
  const long = "smtp; 550 5.7.1 " + "policy rejection with a long explanation ".repeat(120);
  const many = Array.from({ length: 150 }, (_, i) => ({ address: `user${i}@b.test`, action: "failed" as const, status: "5.1.1", diagnostic: `smtp; 550 5.1.1 <user${i}@b.test> unknown` }));
  test.each<[string, Partial<DsnInput>]>([
    ["a plain failure", {}],
    ["a long diagnostic", { recipients: [{ address: "bob@b.test", action: "failed", status: "5.7.1", diagnostic: long }] }],
    ["a diagnostic with one 5000-character word", { recipients: [{ address: "bob@b.test", action: "failed", status: "5.0.0", diagnostic: "http; " + "x".repeat(5000) }] }],
    ["150 recipients", { recipients: many }],
    ["a non-ASCII recipient and sender", { originalFrom: "jörg@ä.test", recipients: [{ address: "δοκιμή@παράδειγμα.test", action: "failed", status: "5.1.1" }] }],
    ["an original with LF line ends", { originalMessage: enc.encode(ORIGINAL_LF) }],
    ["an original without body", { originalMessage: enc.encode("From: a@a.test\r\nSubject: x\r\n") }],
    ["an empty original", { originalMessage: new Uint8Array(0) }],
    ["a delay warning", { recipients: [{ address: "bob@b.test", action: "delayed", status: "4.4.1", diagnostic: "connection timed out", willRetryUntil: new Date("2026-11-25T10:00:00Z") }] }],
    ["failed and delayed recipients", { recipients: [...many.slice(0, 2), { address: "carol@c.test", action: "delayed", status: "4.2.2" }] }],
    ["an injection attempt", { recipients: [{ address: "bob@b.test\r\nFrom: x@evil.test", action: "failed", status: "5.1.1", diagnostic: "smtp; 550 no\r\nFrom: evil@evil.test\r\nAuto-Submitted: no\r\n\r\n--x--" }] }],
    ["a sender at an IP literal", { originalFrom: "alice@[192.0.2.1]" }],
    ["an original whose headers are 8-bit", { originalMessage: enc.encode("From: Jörg <jörg@a.test>\r\nSubject: Grüße\r\n\r\nbody\r\n") }],
  ])("%s", (_name, over) => {
    const msg = buildDsn(input(over));
    expect(checkEncryption(msg)).toEqual({ pass: true, kind: "bounce" });
    expectWellFormed(msg);
  });
});

describe("structure", () => {
  test("top-level headers, each once", () => {
    const { top, preamble } = parse(buildDsn(input()));
    const one = (n: string) => {
      const v = get(top, n);
      expect(v).toHaveLength(1);
      return v[0]!;
    };
    expect(one("from")).toBe("Mail Delivery System <mailer-daemon@a.test>");
    expect(one("to")).toBe("<alice@a.test>");
    expect(one("subject")).toBe("Undelivered Mail Returned to Sender");
    expect(one("auto-submitted")).toBe("auto-replied");
    expect(one("mime-version")).toBe("1.0");
    expect(one("date")).toBe("Fri, 20 Nov 2026 10:05:01 +0000");
    expect(one("message-id")).toMatch(/^<[0-9a-z]+\.[0-9a-f]{24}@mx\.a\.test>$/);
    expect(one("content-type")).toMatch(/^multipart\/report; report-type=delivery-status;\s*boundary="[^"]+"$/);
    expect(preamble.length).toBeLessThan(100);
  });

  test("three parts: notification, delivery report, the original headers", () => {
    const { parts } = parse(buildDsn(input()));
    expect(parts.map((p) => get(p, "content-type")[0])).toEqual(["text/plain; charset=utf-8", "message/delivery-status", "text/rfc822-headers"]);
    const [human, , headers] = parts;
    expect(human!.body).toContain("could not be delivered to 1 recipient");
    expect(human!.body).toContain("<bob@b.test>");
    expect(human!.body).toContain("This address does not exist at the destination.");
    expect(human!.body).toContain("The server mx.b.test said: 550 5.1.1 user unknown");
    expect(human!.body).toContain("Queue ID: Q0123456789");
    expect(headers!.body).toBe("From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: [...]\r\nMessage-ID: <m1@a.test>\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"enc\"\r\n");
  });

  test("delivery-status fields (RFC 3464 §2.2, §2.3)", () => {
    const { parts } = parse(buildDsn(input({ recipients: [input().recipients[0]!, { address: "carol@b.test", action: "failed", status: "5.2.2" }] })));
    const [msgFields, r1, r2, ...rest] = statusGroups(parts[1]!.body);
    expect(rest).toEqual([]);
    expect(msgFields!.fields).toEqual([
      ["reporting-mta", "dns; mx.a.test"],
      ["x-madmail-queue-id", "Q0123456789"],
      ["arrival-date", "Fri, 20 Nov 2026 10:00:00 +0000"],
    ]);
    expect(r1!.fields).toEqual([
      ["final-recipient", "rfc822; bob@b.test"],
      ["action", "failed"],
      ["status", "5.1.1"],
      ["remote-mta", "dns; mx.b.test"],
      ["diagnostic-code", "smtp; 550 5.1.1 user unknown"],
      ["last-attempt-date", "Fri, 20 Nov 2026 10:05:00 +0000"],
    ]);
    expect(r2!.fields).toEqual([["final-recipient", "rfc822; carol@b.test"], ["action", "failed"], ["status", "5.2.2"]]);
  });

  test("CRLF throughout, even with an LF original", () => {
    const msg = buildDsn(input({ originalMessage: enc.encode(ORIGINAL_LF) }));
    expectWellFormed(msg);
    expect(parse(msg).parts[2]!.body).toStartWith("From: Alice <alice@a.test>\r\nTo: bob@b.test\r\n");
  });

  test("a delay warning says so", () => {
    const { top, parts } = parse(buildDsn(input({ recipients: [{ address: "bob@b.test", action: "delayed", status: "4.4.1", willRetryUntil: new Date("2026-11-25T10:00:00Z") }] })));
    expect(get(top, "subject")).toEqual(["Delayed Mail (still being retried)"]);
    expect(parts[0]!.body).toContain("has not been delivered yet");
    expect(parts[0]!.body).toContain("do not need to send it again");
    const r = statusGroups(parts[1]!.body)[1]!;
    expect(get(r, "action")).toEqual(["delayed"]);
    expect(get(r, "will-retry-until")).toEqual(["Wed, 25 Nov 2026 10:00:00 +0000"]);
  });

  test("with failed and delayed recipients the subject is the failure's", () => {
    const { top, parts } = parse(buildDsn(input({ recipients: [{ address: "a@b.test", action: "delayed", status: "4.4.1" }, { address: "c@b.test", action: "failed", status: "5.1.1" }] })));
    expect(get(top, "subject")).toEqual(["Undelivered Mail Returned to Sender"]);
    expect(parts[0]!.body).toContain("could not be delivered to 1 recipient");
    expect(parts[0]!.body).toContain("has not been delivered yet to 1 recipient");
  });

  test.each([
    ["smtp; 550 5.1.1 no", "smtp; 550 5.1.1 no"],
    ["http; 404 bad request", "http; 404 bad request"],
    ["x-madmail; gave up after 9 tries", "x-madmail; gave up after 9 tries"],
    ["connection refused", "X-Madmail; connection refused"],
    ["smtp; 550 Empfänger unbekannt", "smtp; 550 Empf?nger unbekannt"],
  ])("Diagnostic-Code for %j is %j", (diagnostic, expected) => {
    const { parts } = parse(buildDsn(input({ recipients: [{ address: "bob@b.test", action: "failed", status: "5.0.0", diagnostic }] })));
    expect(get(statusGroups(parts[1]!.body)[1]!, "diagnostic-code")).toEqual([expected]);
  });

  test.each([
    ["mx.b.test", "dns; mx.b.test"],
    ["https://mx.b.test:8443/mxdeliv", "dns; mx.b.test"],
    ["mx.b.test:25", "dns; mx.b.test"],
    ["dns; mx.b.test", "dns; mx.b.test"],
    ["mx.bücher.test", "dns; mx.xn--bcher-kva.test"],
  ])("Remote-MTA for %j is %j", (remoteMta, expected) => {
    const { parts } = parse(buildDsn(input({ recipients: [{ address: "bob@b.test", action: "failed", status: "5.0.0", remoteMta }] })));
    expect(get(statusGroups(parts[1]!.body)[1]!, "remote-mta")).toEqual([expected]);
  });

  test("a malformed status becomes the action's default", () => {
    const { parts } = parse(buildDsn(input({ recipients: [{ address: "a@b.test", action: "failed", status: "550" }, { address: "c@b.test", action: "delayed", status: "4.x" }] })));
    const [, a, c] = statusGroups(parts[1]!.body);
    expect(get(a!, "status")).toEqual(["5.0.0"]);
    expect(get(c!, "status")).toEqual(["4.0.0"]);
  });

  test("Original-Envelope-Id only when the sender gave an ENVID", () => {
    const without = statusGroups(parse(buildDsn(input())).parts[1]!.body)[0]!;
    expect(get(without, "original-envelope-id")).toEqual([]);
    const withId = statusGroups(parse(buildDsn(input({ envelopeId: "abc+2Bdef" }))).parts[1]!.body)[0]!;
    expect(get(withId, "original-envelope-id")).toEqual(["abc+2Bdef"]);
  });

  test("long fields are folded at 78 columns where there is a space, never past 998", () => {
    const diagnostic = "smtp; 550 5.7.1 " + "word ".repeat(400) + "y".repeat(3000);
    const msg = buildDsn(input({ recipients: [{ address: "bob@b.test", action: "failed", status: "5.7.1", diagnostic }] }));
    const { parts } = parse(msg);
    const lines = parts[1]!.body.split("\r\n");
    const diagLines = lines.slice(lines.findIndex((l) => l.startsWith("Diagnostic-Code:")));
    const folded = diagLines.slice(0, diagLines.findIndex((l, i) => i > 0 && !l.startsWith(" ")));
    expect(folded.length).toBeGreaterThan(20);
    for (const l of folded.filter((l) => !l.includes("yyy"))) expect(l.length).toBeLessThanOrEqual(78);
    for (const l of folded) expect(l.length).toBeLessThanOrEqual(998);
    const value = get(statusGroups(parts[1]!.body)[1]!, "diagnostic-code")[0]!;
    expect(value.length).toBeLessThan(2100); // cut: a remote reply cannot blow up the bounce
    expectWellFormed(msg);
  });
});

describe("nothing from outside escapes its field", () => {
  const evil = input({
    originalFrom: "alice@a.test\r\nBcc: victim@c.test",
    queueId: "Q1\r\nX-Injected: 1",
    recipients: [
      {
        address: "bob@b.test\r\nFinal-Recipient: rfc822; forged@b.test",
        action: "failed",
        status: "5.1.1\r\nAction: delivered",
        diagnostic: "smtp; 550 no\r\nFrom: evil@evil.test\n\nAuto-Submitted: no\r\n--=_madmail_dsn_\u2028\u0085end",
        remoteMta: "mx.b.test\r\nRemote-MTA: dns; forged.test",
      },
    ],
  });

  test("no header, field or delimiter can be injected", () => {
    const msg = buildDsn(evil);
    expect(checkEncryption(msg)).toEqual({ pass: true, kind: "bounce" });
    expectWellFormed(msg);
    const { top, parts, text } = parse(msg);
    expect(top.fields.map(([n]) => n)).toEqual(["from", "to", "subject", "date", "message-id", "auto-submitted", "mime-version", "content-type"]);
    expect(get(top, "to")[0]).not.toContain("\r");
    expect(parts).toHaveLength(3);
    const groups = statusGroups(parts[1]!.body);
    expect(groups).toHaveLength(2);
    expect(groups[0]!.fields.map(([n]) => n)).toEqual(["reporting-mta", "x-madmail-queue-id", "arrival-date"]);
    expect(groups[1]!.fields.map(([n]) => n)).toEqual(["final-recipient", "action", "status", "remote-mta", "diagnostic-code"]);
    expect(get(groups[1]!, "status")).toEqual(["5.0.0"]);
    expect(text).not.toMatch(/\r\n(Bcc|X-Injected|From: evil|Auto-Submitted: no|Action: delivered|Remote-MTA: dns; forged)/);
    expect(text).not.toMatch(/[\u2028\u0085]/);
  });

  test("the human text has no line that a parser could take for a delimiter", () => {
    const { parts, boundary } = parse(buildDsn(evil));
    for (const line of parts[0]!.body.split("\r\n")) expect(line.startsWith(`--${boundary}`)).toBe(false);
  });
});

describe("the original body never comes back", () => {
  test.each([
    ["CRLF", ORIGINAL_CRLF],
    ["LF", ORIGINAL_LF],
    ["a whitespace-only line ends the headers", "From: a@a.test\r\nSubject: x\r\n  \r\nSECRET-CIPHERTEXT-LINE\r\n"],
    ["a line without colon ends the headers", "From: a@a.test\r\nSECRET-CIPHERTEXT-LINE\r\nSubject: x\r\n\r\nbody"],
    ["a header block starting with a continuation", " SECRET-CIPHERTEXT-LINE\r\nFrom: a@a.test\r\n\r\nbody"],
    ["CR only", "From: a@a.test\rSECRET-CIPHERTEXT-LINE\r\r"],
  ])("%s", (_name, original) => {
    const msg = buildDsn(input({ originalMessage: enc.encode(original) }));
    expect(utf8(msg)).not.toContain("SECRET-CIPHERTEXT-LINE");
    expect(utf8(msg)).not.toContain("BEGIN PGP MESSAGE");
    expect(checkEncryption(msg)).toEqual({ pass: true, kind: "bounce" });
    expectWellFormed(msg);
  });

  test("returned headers are cut at a line beyond the limit", () => {
    const big = Array.from({ length: 3000 }, (_, i) => `X-Filler-${i}: ${"f".repeat(40)}`).join("\r\n");
    const { parts } = parse(buildDsn(input({ originalMessage: enc.encode(`From: a@a.test\r\n${big}\r\n\r\nbody`) })));
    const returned = parts[2]!.body;
    expect(returned.length).toBeLessThanOrEqual(MAX_RETURNED_HEADERS);
    expect(returned.length).toBeGreaterThan(MAX_RETURNED_HEADERS - 100);
    expect(returned).toEndWith("f\r\n");
  });
});

describe("non-ASCII addresses", () => {
  test("utf-8 address type in the report, raw UTF-8 in the headers and text", () => {
    const msg = buildDsn(input({ originalFrom: "jörg@bücher.test", recipients: [{ address: "δοκιμή+1=2@b.test", action: "failed", status: "5.1.1" }] }));
    const { top, parts } = parse(msg);
    expect(get(top, "from")).toEqual(["Mail Delivery System <mailer-daemon@xn--bcher-kva.test>"]);
    expect(get(top, "to")).toEqual(["<jörg@bücher.test>"]);
    expect(get(top, "content-transfer-encoding")).toEqual(["8bit"]);
    expect(parts[0]!.body).toContain("<δοκιμή+1=2@b.test>");
    expect(get(parts[0]!, "content-transfer-encoding")).toEqual(["8bit"]);
    // RFC 6533 §3 utf-8-addr-xtext: "+", "=" and non-ASCII as \x{HEX}; the report stays 7-bit.
    expect(get(statusGroups(parts[1]!.body)[1]!, "final-recipient")).toEqual(["utf-8; \\x{3B4}\\x{3BF}\\x{3BA}\\x{3B9}\\x{3BC}\\x{3AE}\\x{2B}1\\x{3D}2@b.test"]);
    expect(parts[1]!.body).toMatch(/^[\x00-\x7f]*$/);
  });

  test("8-bit original headers are message/global-headers (RFC 6533 §6.3)", () => {
    const { parts } = parse(buildDsn(input({ originalMessage: enc.encode("From: Jörg <jörg@a.test>\r\n\r\nbody") })));
    expect(get(parts[2]!, "content-type")).toEqual(["message/global-headers"]);
    expect(parts[2]!.body).toBe("From: Jörg <jörg@a.test>\r\n");
  });

  test("all-ASCII input gives a 7-bit message", () => {
    const msg = buildDsn(input());
    expect(latin1(msg)).toMatch(/^[\x00-\x7f]*$/);
    expect(get(parse(msg).top, "content-transfer-encoding")).toEqual([]);
  });
});
