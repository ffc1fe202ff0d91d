// The encryption gate on the real samples and on mutations of them: MIME structure, headers,
// transfer encodings, the Secure-Join and bounce exceptions. OpenPGP packets and armor are in
// pgp-gate-packets.test.ts.
import { describe, expect, test } from "bun:test";
import { checkEncryption, type GateVerdict } from "../../src/policy/pgp-gate.ts";
import { armor, bytes, eolOf, payloadOf, pgpMime, sample, sampleNames } from "./pgp-gate-fixtures.ts";

const gate = (msg: string): GateVerdict => checkEncryption(bytes(msg));
const passes = (msg: string, kind: string = "pgp-mime") => expect(gate(msg)).toEqual({ pass: true, kind } as GateVerdict);
const fails = (msg: string, reason?: RegExp) => {
  const v = gate(msg);
  expect(v.pass).toBe(false);
  if (reason && !v.pass) expect(v.reason).toMatch(reason);
};

const names = sampleNames();
const passNames = names.filter((n) => n.startsWith("pass-"));
const failNames = names.filter((n) => n.startsWith("fail-"));
const expectedKind = (n: string) => (n.startsWith("pass-securejoin-") ? "secure-join" : n.includes("bounce") ? "bounce" : "pgp-mime");

const DC = sample("pass-deltachat-2.57-chat.eml"); // LF, folded Content-Type, PKESK v6 x2 + SEIPD v2
const GPG = sample("pass-gnupg-2.2-encrypted-signed.eml"); // CRLF, PKESK v3 x2 + SEIPD v1
const SJ = sample("pass-securejoin-vc-request-plaintext.eml"); // CRLF
const B_DC = /boundary="([^"]+)"/.exec(DC)![1]!;
const B_GPG = /boundary="([^"]+)"/.exec(GPG)![1]!;
const B_SJ = /boundary="([^"]+)"/.exec(SJ)![1]!;

describe("samples", () => {
  test("the sample folder is complete", () => {
    expect(names.length).toBeGreaterThanOrEqual(12);
    expect(passNames.length).toBeGreaterThanOrEqual(6);
    expect(failNames.length).toBeGreaterThanOrEqual(6);
  });

  test.each(passNames)("%s passes", (name) => passes(sample(name), expectedKind(name)));
  test.each(failNames)("%s fails", (name) => fails(sample(name)));

  test.each(passNames)("%s passes with LF line endings", (name) => passes(sample(name).replace(/\r\n/g, "\n"), expectedKind(name)));
  test.each(passNames)("%s passes with CRLF line endings", (name) =>
    passes(sample(name).replace(/\r?\n/g, "\r\n"), expectedKind(name)),
  );
  test.each(failNames)("%s fails with either line ending", (name) => {
    fails(sample(name).replace(/\r\n/g, "\n"));
    fails(sample(name).replace(/\r?\n/g, "\r\n"));
  });

  test("the reasons name the defect", () => {
    fails(sample("fail-encrypted-three-parts.eml"), /more than 2 body parts/);
    fails(sample("fail-encrypted-literal-data.eml"), /literal data/);
    fails(sample("fail-encrypted-missing-version.eml"), /Version: 1/);
    fails(sample("fail-signed-not-encrypted.eml"), /multipart\/signed/);
    fails(sample("fail-plaintext-mentions-pgp-encrypted.eml"), /text\/plain/);
  });
});

describe("top-level headers", () => {
  test("header names are case-insensitive", () => {
    passes(DC.replace("Content-Type: multipart", "CONTENT-TYPE: multipart"));
    passes(GPG.replace("Content-Type: multipart", "content-type: multipart"));
  });

  test("folding anywhere in Content-Type", () => {
    passes(GPG.replace(`Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n boundary=`, `Content-Type:\r\n multipart/encrypted;\r\n\tprotocol="application/pgp-encrypted"\r\n   ;\r\n boundary=`));
    passes(pgpMime({ contentType: `Content-Type: multipart/encrypted; boundary="=-=b0undary=-="; protocol="application/pgp-encrypted"` }));
  });

  test("MIME values and parameter names are case-insensitive", () => {
    passes(pgpMime({ contentType: `Content-Type: Multipart/Encrypted; PROTOCOL="Application/PGP-Encrypted"; Boundary="=-=b0undary=-="` }));
    passes(pgpMime({ part1Headers: ["Content-Type: APPLICATION/pgp-encrypted"], part2Headers: ["content-type: Application/Octet-Stream; Name=x.asc"] }));
  });

  test("unquoted boundary, comments and a trailing semicolon", () => {
    passes(pgpMime({ boundary: "simple.b0undary", contentType: `Content-Type: multipart/encrypted; boundary=simple.b0undary; protocol="application/pgp-encrypted";` }));
    passes(pgpMime({ contentType: `Content-Type: multipart/encrypted (PGP/MIME); protocol="application/pgp-encrypted" (rfc 3156); boundary="=-=b0undary=-="` }));
    passes(pgpMime({ boundary: "a b", contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="a b"` }));
  });

  test("the obsolete space before the colon is refused for the fields that decide", () => {
    fails(GPG.replace("Content-Type: multipart", "Content-Type : multipart"), /whitespace before the colon/);
    fails(GPG.replace("Content-Type: multipart", "Content-Type\t: text/plain\r\nContent-Type: multipart"), /whitespace before the colon/);
    fails(SJ.replace("Secure-Join: vc-request", "Secure-Join : vc-request"), /whitespace before the colon/);
    passes(GPG.replace("Subject: ...", "Subject : ...")); // other fields do not matter
  });

  test("a repeated Content-Type fails whichever comes first", () => {
    fails(GPG.replace("MIME-Version: 1.0", "MIME-Version: 1.0\r\nContent-Type: text/plain"), /repeated/);
    fails(GPG.replace("Autocrypt:", "Content-Type: multipart/mixed; boundary=x\r\nAutocrypt:"), /repeated/);
  });

  test("a repeated or RFC 2231 boundary/protocol parameter fails", () => {
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="=-=b0undary=-="; boundary="other"` }), /unparseable/);
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="=-=b0undary=-="; boundary*0="other"` }), /unparseable/);
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted; protocol*=''application%2Fpgp-encrypted; boundary="=-=b0undary=-="` }), /unparseable/);
  });

  test("protocol must be application/pgp-encrypted", () => {
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted; boundary="=-=b0undary=-="` }), /protocol/);
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-signature"; boundary="=-=b0undary=-="` }), /protocol/);
  });

  test("unparseable or missing Content-Type fails", () => {
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted; boundary="=-=b0undary=-="` }));
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted protocol="application/pgp-encrypted"` }));
    fails(pgpMime({ contentType: `Content-Type: =?utf-8?q?multipart/encrypted?=` }));
    fails(pgpMime({ contentType: "X-Nothing: here" }), /text\/plain/);
  });

  test("boundaries outside RFC 2046 fail", () => {
    const long = "x".repeat(71);
    fails(pgpMime({ boundary: long, contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="${long}"` }), /boundary/);
    fails(pgpMime({ boundary: "trailing ", contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="trailing "` }), /boundary/);
    fails(pgpMime({ boundary: "a<b", contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="a<b"` }), /boundary/);
    fails(pgpMime({ contentType: `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=""` }), /boundary/);
  });

  test("ambiguous header blocks fail", () => {
    // a whitespace-only line: some parsers end the headers there, others fold it
    fails(GPG.replace("MIME-Version: 1.0\r\n", "MIME-Version: 1.0\r\n \r\n"), /whitespace-only/);
    fails(" X-Folded: first\r\n" + GPG, /continuation/);
    fails(GPG.replace("MIME-Version: 1.0", "MIME-Version 1.0"), /colon/);
    fails(GPG.replace("MIME-Version: 1.0", ": 1.0"), /field name/);
    fails(GPG.replace("MIME-Version: 1.0", "MIME\u0000Version: 1.0"), /field name/);
    fails("From alice@a.test Sat Nov 21 11:11:46 2026\r\n" + GPG); // mbox separator
  });

  test("a multipart may not be transfer-encoded as a whole (RFC 2045 §6.4)", () => {
    passes(pgpMime({ extraHeaders: ["Content-Transfer-Encoding: 7bit"] }));
    passes(pgpMime({ extraHeaders: ["Content-Transfer-Encoding: 8BIT"] }));
    fails(pgpMime({ extraHeaders: ["Content-Transfer-Encoding: base64"] }), /Transfer-Encoding/);
    fails(pgpMime({ extraHeaders: ["Content-Transfer-Encoding: 7bit", "Content-Transfer-Encoding: 7bit"] }), /Transfer-Encoding/);
  });

  test("no body at all fails", () => {
    fails("");
    fails("\r\n");
    fails(GPG.slice(0, GPG.indexOf("\r\n\r\n") + 2), /without a body/);
  });
});

describe("multipart structure", () => {
  test("the samples' real shapes: GnuPG preamble, Delta Chat empty preamble and epilogue", () => {
    passes(GPG);
    passes(DC);
    expect(DC).toContain("\n\n\n--" + B_DC);
    expect(GPG).toContain("(RFC 3156).\r\n--" + B_GPG);
  });

  test("transport padding after delimiters passes", () => {
    passes(GPG.replaceAll(`--${B_GPG}\r\n`, `--${B_GPG} \t \r\n`).replace(`--${B_GPG}--`, `--${B_GPG}--  `));
    passes(DC.replace(`--${B_DC}--\n\n`, `--${B_DC}--`)); // no line break after the close delimiter
  });

  test("exactly two parts", () => {
    fails(pgpMime({ moreParts: ["Content-Type: text/plain\r\n\r\nhello"] }), /more than 2/);
    fails(pgpMime({ moreParts: ["Content-Type: application/octet-stream\r\n\r\n" + armor(payloadOf(GPG), { eol: "\r\n" })] }), /more than 2/);
    const onlyControl = GPG.slice(0, GPG.indexOf(`--${B_GPG}\r\nContent-Type: application/octet-stream`)) + `--${B_GPG}--\r\n`;
    fails(onlyControl, /1 part/);
    fails(GPG.replace(/--=-=.*?=-=\r\nContent-Type: application\/pgp-encrypted[\s\S]*?Version: 1\r\n\r\n/, ""), /1 part/);
    fails(pgpMime().replace(/--=-=b0undary=-=\r\n[\s\S]*--=-=b0undary=-=--/, "--=-=b0undary=-=--"), /close delimiter before/);
  });

  test("parts in the wrong order or with wrong types fail", () => {
    const payload = armor(payloadOf(GPG), { eol: "\r\n" });
    fails(pgpMime({ part1Headers: ["Content-Type: application/octet-stream"], part1Body: payload, part2Headers: ["Content-Type: application/pgp-encrypted"], part2Body: "Version: 1\r\n" }), /part 1/);
    fails(pgpMime({ part1Headers: ["Content-Type: text/plain"] }), /part 1 is text\/plain/);
    fails(pgpMime({ part1Headers: [] }), /part 1 is text\/plain/); // RFC 2046: the default is text/plain
    fails(pgpMime({ part2Headers: ["Content-Type: text/plain"] }), /part 2 is text\/plain/);
    fails(pgpMime({ part2Headers: ["Content-Type: application/pgp-encrypted"] }), /part 2/);
    fails(pgpMime({ part2Headers: [`Content-Type: multipart/mixed; boundary="inner"`], part2Body: "--inner\r\nContent-Type: application/octet-stream\r\n\r\n" + armor(payloadOf(GPG), { eol: "\r\n" }) + "\r\n--inner--" }), /part 2 is multipart\/mixed/);
  });

  test("part 1 must be exactly Version: 1", () => {
    fails(GPG.replace("\r\nVersion: 1\r\n", "\r\nVersion: 2\r\n"), /Version: 1/);
    fails(DC.replace("\nVersion: 1\n", "\nversion: 1\n"), /Version: 1/);
    fails(DC.replace("\nVersion: 1\n", "\nVersion: 10\n"), /Version: 1/);
    fails(DC.replace("\nVersion: 1\n", "\nVersion: 1\nHello Bob, this part is not encrypted.\n"), /Version: 1/);
    fails(pgpMime({ part1Body: "Version: 1\r\n" + "x".repeat(300) }), /Version: 1/);
    passes(pgpMime({ part1Body: "\r\n  Version: 1  \r\n\r\n" }));
    passes(pgpMime({ part1Body: "Version: 1" }));
    passes(pgpMime({ part1Headers: ["Content-Type: application/pgp-encrypted", "Content-Transfer-Encoding: base64"], part1Body: btoa("Version: 1\r\n") }));
  });

  test("repeated part headers fail", () => {
    fails(pgpMime({ part2Headers: ["Content-Type: application/octet-stream", "Content-Type: text/plain"] }), /repeated Content-Type/);
    fails(pgpMime({ part2Headers: ["Content-Type: application/octet-stream", "Content-Transfer-Encoding: 7bit", "Content-Transfer-Encoding: base64"] }), /repeated/);
    fails(pgpMime({ part2Headers: ["Content-Type: application/octet-stream", " folded-first"] }));
  });

  test("a missing close delimiter fails", () => {
    fails(GPG.replace(`--${B_GPG}--\r\n`, ""), /close delimiter/);
    fails(DC.replace(`--${B_DC}--`, `--${B_DC}`), /close delimiter/);
    fails(GPG.replace(`--${B_GPG}--\r\n`, `--${B_GPG}-\r\n`), /no delimiter/);
  });

  test("lines that start with the boundary but are no delimiter fail", () => {
    fails(GPG.replace("(RFC 3156).", `(RFC 3156).\r\n--${B_GPG}x\r\nContent-Type: text/plain\r\n\r\nsecret`), /no delimiter/);
    fails(GPG.replace("-----END PGP MESSAGE-----", `-----END PGP MESSAGE-----\r\n--${B_GPG}--x`), /no delimiter/);
    fails(DC.replace(`--${B_DC}--`, `--${B_DC}--\n--${B_DC}\nContent-Type: text/plain\n\nplaintext\n--${B_DC}--`), /after the close delimiter/);
    fails(DC.replace(`--${B_DC}\nContent-Type: application/pgp-encrypted`, `--${B_DC}--\n--${B_DC}\nContent-Type: application/pgp-encrypted`), /close delimiter before/);
  });

  test("a boundary must start its line", () => {
    // "--boundary" in the middle of a line is content, so part 1 no longer reads "Version: 1"
    fails(pgpMime({ part1Body: `Version: 1 --=-=b0undary=-=\r\n` }), /Version: 1/);
  });

  test("an encrypted message wrapped in anything else fails", () => {
    const inner = pgpMime();
    const mixed = [
      "From: <alice@a.test>",
      `Content-Type: multipart/mixed; boundary="outer"`,
      "",
      "--outer",
      "Content-Type: text/plain",
      "",
      "Plaintext next to an encrypted part.",
      "--outer",
      inner.slice(inner.indexOf("Content-Type: multipart/encrypted")),
      "--outer--",
      "",
    ].join("\r\n");
    fails(mixed, /multipart\/mixed/);
    fails("From: <alice@a.test>\r\nContent-Type: message/rfc822\r\n\r\n" + inner, /message\/rfc822/);
  });

  test("preamble and epilogue: short text passes, long plaintext fails", () => {
    passes(pgpMime({ preamble: "This is an OpenPGP/MIME encrypted message (RFC 3156).\r\n" }));
    passes(pgpMime({ epilogue: "\r\nbye\r\n" }));
    fails(pgpMime({ preamble: "Dear Bob,\r\n" + "the plaintext you asked for.\r\n".repeat(40) }), /preamble/);
    fails(pgpMime({ epilogue: "P.S. the plaintext you asked for.\r\n".repeat(40) }), /epilogue/);
  });
});

describe("transfer encodings of part 2", () => {
  const payload = payloadOf(GPG);
  const armored = armor(payload, { eol: "\r\n" });
  const b64 = (s: string | Uint8Array) => (Buffer.from(typeof s === "string" ? Buffer.from(s, "latin1") : s).toString("base64").match(/.{1,76}/g) ?? []).join("\r\n");
  const withCte = (cte: string, body: string) => pgpMime({ part2Headers: ["Content-Type: application/octet-stream", `Content-Transfer-Encoding: ${cte}`], part2Body: body });

  test("base64 of the armored text passes", () => passes(withCte("base64", b64(armored))));
  test("base64 of the binary message passes", () => passes(withCte("Base64", b64(payload))));
  test("binary message with 8bit/binary passes", () => {
    passes(withCte("binary", Buffer.from(payload).toString("latin1")));
    passes(pgpMime({ part2Body: Buffer.from(payload).toString("latin1") }));
  });
  test("quoted-printable armor passes", () => {
    const qp = armored.replace(/=/g, "=3D").replace(/\r\n$/, "=\r\n");
    passes(withCte("quoted-printable", qp));
  });
  test("bad transfer encodings fail", () => {
    fails(withCte("base64", b64(armored).replace("A", "*")), /base64/);
    fails(withCte("base64", b64(armored) + "\r\nplaintext"), /base64/);
    fails(withCte("quoted-printable", armored), /quoted-printable/); // "=sif7" is not a valid escape
    fails(withCte("x-uuencode", armored), /unknown Content-Transfer-Encoding/);
    fails(withCte("base64", b64("Hello Bob, this is plaintext.\r\n")), /neither binary OpenPGP nor an armored/);
  });
});

describe("Secure-Join exception", () => {
  const vg = SJ.replace("Secure-Join: vc-request", "Secure-Join: vg-request").replace("secure-join: vc-request", "secure-join: vg-request");

  test("vc-request and vg-request pass", () => {
    passes(SJ, "secure-join");
    passes(vg, "secure-join");
    passes(SJ.replace("secure-join: vc-request", "Secure-Join: vc-request"), "secure-join"); // Delta Chat's spelling
    passes(SJ.replace("Secure-Join: vc-request", "secure-join:   Vc-Request "), "secure-join");
    passes(SJ.replace("Content-Transfer-Encoding: 7bit", "Content-Transfer-Encoding: base64").replace("secure-join: vc-request\r\n", btoa("secure-join: vc-request") + "\r\n"), "secure-join");
  });

  test("other Secure-Join steps get no exception", () => {
    for (const step of ["vc-auth", "vg-auth", "vc-request-with-auth", "vc-contact-confirm", "vg-member-added", "vc-request, vg-request", ""])
      fails(SJ.replace("Secure-Join: vc-request", `Secure-Join: ${step}`).replace("secure-join: vc-request", `secure-join: ${step}`), /Secure-Join/);
  });

  test("the body must be exactly the handshake line", () => {
    fails(SJ.replace("secure-join: vc-request", "secure-join: vc-request\r\n\r\nHi Alice, my bank PIN is 1234."), /other text/);
    fails(SJ.replace("secure-join: vc-request", "secure-join: vc-requestX"), /other text/);
    fails(SJ.replace("secure-join: vc-request", "secure-join: vg-request"), /other text/); // header says vc
    fails(SJ.replace("secure-join: vc-request", "Hello"), /other text/);
    fails(SJ.replace("secure-join: vc-request", "secure-join: vc-request" + " ".repeat(300)), /other text/);
  });

  test("the shape must be multipart/mixed with one text/plain part", () => {
    const extra = `--${B_SJ}\r\nContent-Type: text/plain\r\n\r\nplaintext smuggled in a second part\r\n--${B_SJ}--`;
    fails(SJ.replace(`--${B_SJ}--`, extra), /more than 1 body part/);
    fails(SJ.replace(`--${B_SJ}\r\n`, `--${B_SJ}\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--${B_SJ}\r\n`), /more than 1/);
    fails(SJ.replace(`Content-Type: text/plain; charset="utf-8"`, `Content-Type: text/html`), /text\/html/);
    fails(SJ.replace("multipart/mixed", "multipart/alternative"), /multipart\/mixed/);
    const bare = SJ.slice(0, SJ.indexOf("Content-Type: multipart/mixed")) + "Content-Type: text/plain\r\n\r\nsecure-join: vc-request\r\n";
    fails(bare, /multipart\/mixed/); // the chatmail filter rejects it too
    const nested = SJ.replace(`Content-Type: text/plain; charset="utf-8"`, `Content-Type: multipart/mixed; boundary="in"`);
    fails(nested, /multipart\/mixed part/);
  });

  test("a repeated Secure-Join header fails", () => {
    fails(SJ.replace("Secure-Join: vc-request", "Secure-Join: vc-request\r\nSecure-Join: vc-auth"), /repeated Secure-Join/);
  });

  test("a Secure-Join header does not weaken the PGP/MIME check", () => {
    passes(pgpMime({ extraHeaders: ["Secure-Join: vc-auth"] }));
    fails(pgpMime({ extraHeaders: ["Secure-Join: vc-request"], part1Body: "Version: 2" }), /Version: 1/);
  });
});

describe("bounce exception", () => {
  const dsn = (o: { from?: string; auto?: string | null; type?: string; parts?: string[] } = {}) => {
    const b = "27F5E1C0.1700000000/mx.a.test";
    const parts = o.parts ?? [
      "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThis is the mail system at host mx.a.test.\r\n\r\nI'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n",
      "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.a.test\r\n\r\nFinal-Recipient: rfc822; nobody@b.test\r\nAction: failed\r\nStatus: 5.1.1\r\n",
      "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: <alice@a.test>\r\nTo: <nobody@b.test>\r\nSubject: [...]\r\n",
    ];
    return [
      `From: ${o.from ?? "MAILER-DAEMON@mx.a.test (Mail Delivery System)"}`,
      "To: alice@a.test",
      "Subject: Undelivered Mail Returned to Sender",
      ...(o.auto === null ? [] : [`Auto-Submitted: ${o.auto ?? "auto-replied"}`]),
      "MIME-Version: 1.0",
      `Content-Type: ${o.type ?? `multipart/report; report-type=delivery-status;\r\n\tboundary="${b}"`}`,
      "",
      "This is a MIME-encapsulated message.",
      "",
      ...parts.map((p) => `--${b}\r\n${p}`),
      `--${b}--`,
      "",
    ].join("\r\n");
  };

  test("Postfix- and Exim-style delivery status notifications pass", () => {
    passes(dsn(), "bounce");
    passes(dsn({ from: "Mail Delivery System <Mailer-Daemon@mx.b.test>", auto: "auto-replied" }), "bounce");
    passes(dsn({ from: "mailer-daemon@a.test", auto: "auto-generated" }), "bounce");
    const [human, status] = dsn().match(/Content-Description: (Notification|Delivery report)[\s\S]*?(?=\r\n--)/g)!;
    passes(dsn({ parts: [human!, status!] }), "bounce");
    passes(dsn({ parts: [human!, status!.replace("message/delivery-status", "message/global-delivery-status"), "Content-Type: message/rfc822\r\n\r\nFrom: <alice@a.test>\r\n\r\nbody\r\n"] }), "bounce");
  });

  test("without Auto-Submitted, or Auto-Submitted: no, fails", () => {
    fails(dsn({ auto: null }), /Auto-Submitted/);
    fails(dsn({ auto: "no" }), /Auto-Submitted/);
    fails(dsn({ auto: "No (manual)" }), /Auto-Submitted/);
  });

  test("not from a mailer-daemon fails", () => {
    fails(dsn({ from: "alice@a.test" }), /mailer-daemon/);
    fails(dsn({ from: "Mailer-Daemon <postmaster@a.test>" }), /mailer-daemon/);
    fails(dsn({ from: "mailer-daemon" }), /mailer-daemon/);
    fails(dsn({ from: "bob@b.test, mailer-daemon@a.test" }), /mailer-daemon/);
    fails(dsn({ from: "Bob <bob@b.test>, <mailer-daemon@a.test>" }), /mailer-daemon/);
    fails(dsn({ from: "<mailer-daemon@a.test> bob@b.test" }), /mailer-daemon/);
    fails(dsn().replace("From: MAILER-DAEMON@mx.a.test (Mail Delivery System)", "From: MAILER-DAEMON@mx.a.test\r\nFrom: bob@b.test"), /mailer-daemon/);
  });

  test("other reports and shapes fail", () => {
    fails(dsn({ type: `multipart/report; report-type=disposition-notification; boundary="27F5E1C0.1700000000/mx.a.test"` }), /delivery status/);
    fails(dsn({ type: `multipart/mixed; boundary="27F5E1C0.1700000000/mx.a.test"` }), /not encrypted/);
    const [human, status, headers] = dsn().match(/Content-Description: [\s\S]*?(?=\r\n--)/g)!;
    fails(dsn({ parts: [human!] }), /unexpected parts/);
    fails(dsn({ parts: [status!, human!] }), /unexpected parts/);
    fails(dsn({ parts: [human!.replace("text/plain", "text/html"), status!, headers!] }), /unexpected parts/);
    fails(dsn({ parts: [human!, status!, "Content-Type: text/plain\r\n\r\nplaintext"] }), /unexpected parts/);
    fails(dsn({ parts: [human!, status!, headers!, "Content-Type: text/plain\r\n\r\nplaintext"] }), /more than 3/);
  });
});

describe("robustness", () => {
  test("every truncation of a pass sample fails before the close delimiter, and nothing throws", () => {
    for (const name of passNames) {
      const msg = sample(name);
      const close = msg.lastIndexOf("--") + 2;
      for (let cut = 0; cut < msg.length; cut++) {
        const v = gate(msg.slice(0, cut));
        if (cut < close) expect(v.pass).toBe(false);
      }
    }
  });

  test("random byte mutations never throw and keep the verdict shape", () => {
    let seed = 42;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (const name of names) {
      const base = bytes(sample(name));
      for (let i = 0; i < 300; i++) {
        const m = base.slice();
        for (let k = 0; k < 1 + rand(4); k++) m[rand(m.length)] = rand(256);
        const v = checkEncryption(m);
        expect(typeof v.pass).toBe("boolean");
        if (!v.pass) expect(v.reason.length).toBeGreaterThan(0);
      }
    }
  });

  test("garbage and binary input fail", () => {
    fails("\u0000\u0001\u0002");
    fails("\r\n\r\n\r\n");
    fails(Buffer.from(payloadOf(GPG)).toString("latin1"));
    fails("-".repeat(10000));
    fails(GPG.replace(/\r\n/g, "\r")); // bare CR is no line break
  });

  test("the verdict is independent of the line-ending style of each part", () => {
    const mixed = GPG.replace("Version: 1\r\n", "Version: 1\n").replace(/(-----END PGP MESSAGE-----)\r\n/, "$1\n");
    passes(mixed);
    expect(eolOf(DC)).toBe("\n");
  });
});
