// The OpenPGP half of the encryption gate: packet sequences (RFC 9580 §4.2, §5) and ASCII armor
// (§6), built from the real packets of the samples and changed one thing at a time.
import { describe, expect, test } from "bun:test";
import { checkEncryption, type GateVerdict } from "../../src/policy/pgp-gate.ts";
import { Base64Reader } from "../../src/policy/openpgp-packets.ts";
import { armor, bigMessage, bytes, concat, filler, newPacket, oldPacket, partialPacket, payloadOf, sample, splitPackets, withPayload } from "./pgp-gate-fixtures.ts";

const DC = sample("pass-deltachat-2.57-chat.eml");
const DC_SYM = sample("pass-deltachat-2.57-securejoin-vc-request-symmetric.eml");
const GPG = sample("pass-gnupg-2.2-encrypted-signed.eml");
const GPG_SYM = sample("pass-gnupg-2.2-symmetric.eml");

/** The GnuPG message with `data` as its armored payload (CRLF, correct checksum). */
const gpgWith = (data: Uint8Array, o: Parameters<typeof armor>[1] = {}) => withPayload(GPG, armor(data, { eol: "\r\n", ...o }));
/** The Delta Chat message with `data` as its armored payload (LF). */
const dcWith = (data: Uint8Array, o: Parameters<typeof armor>[1] = {}) => withPayload(DC, armor(data, { eol: "\n", ...o }));
const verdict = (msg: string): GateVerdict => checkEncryption(bytes(msg));
const passes = (msg: string) => expect(verdict(msg)).toEqual({ pass: true, kind: "pgp-mime" });
const fails = (msg: string, reason: RegExp) => {
  const v = verdict(msg);
  expect(v.pass).toBe(false);
  if (!v.pass) expect(v.reason).toMatch(reason);
};

const gpgPackets = splitPackets(payloadOf(GPG)); // old-format PKESK v3 x2, new-format SEIPD v1
const dcPackets = splitPackets(payloadOf(DC)); // new-format PKESK v6 x2, SEIPD v2
const [pk1, pk2, seipd1] = gpgPackets as [(typeof gpgPackets)[0], (typeof gpgPackets)[0], (typeof gpgPackets)[0]];
const [pk6, , seipd2] = dcPackets as [(typeof dcPackets)[0], (typeof dcPackets)[0], (typeof dcPackets)[0]];
const skesk4 = splitPackets(payloadOf(GPG_SYM))[0]!;
const skesk6 = splitPackets(payloadOf(DC_SYM))[0]!;
const withByte = (p: Uint8Array, i: number, v: number) => {
  const c = p.slice();
  c[i] = v;
  return c;
};

describe("the samples' packets", () => {
  test("are what the README says", () => {
    expect(gpgPackets.map((p) => [p.tag, p.body[0]])).toEqual([[1, 3], [1, 3], [18, 1]]);
    expect(dcPackets.map((p) => [p.tag, p.body[0]])).toEqual([[1, 6], [1, 6], [18, 2]]);
    expect([skesk4.tag, skesk4.body[0], skesk6.tag, skesk6.body[0]]).toEqual([3, 4, 3, 6]);
    expect(pk1.raw[0]).toBe(0x84); // GnuPG writes the PKESK with an old-format header
    expect(seipd1.raw[0]).toBe(0xd2);
  });

  test("rebuilt from their packets they still pass (the test armor is sound)", () => {
    passes(gpgWith(payloadOf(GPG)));
    passes(dcWith(payloadOf(DC)));
  });
});

describe("packet sequence", () => {
  test("any mix of PKESK v3/v6 and SKESK v4/v6 before one SEIPD v1/v2 passes", () => {
    passes(gpgWith(concat(pk1.raw, skesk4.raw, pk6.raw, skesk6.raw, seipd1.raw)));
    passes(dcWith(concat(skesk4.raw, pk2.raw, seipd2.raw)));
    passes(gpgWith(seipd1.raw)); // zero session-key packets
    passes(dcWith(seipd2.raw));
  });

  test("no SEIPD, or anything after it, fails", () => {
    fails(gpgWith(concat(pk1.raw, pk2.raw)), /no SEIPD/);
    fails(gpgWith(concat(pk1.raw, seipd1.raw, seipd1.raw)), /after the SEIPD/);
    fails(gpgWith(concat(pk1.raw, seipd1.raw, pk2.raw)), /after the SEIPD/);
    fails(gpgWith(concat(pk1.raw, seipd1.raw, new Uint8Array([0]))), /after the SEIPD/);
    fails(dcWith(concat(pk6.raw, seipd2.raw, newPacket(21, filler(32)))), /after the SEIPD/); // padding packet
    fails(dcWith(concat(pk6.raw, seipd2.raw, new Uint8Array([0x0a]))), /after the SEIPD/);
    fails(gpgWith(concat(seipd1.raw, pk1.raw)), /after the SEIPD/);
  });

  test("an empty message fails", () => {
    fails(gpgWith(new Uint8Array(0)), /empty OpenPGP message/);
  });

  test("other packet types fail", () => {
    const sed = newPacket(9, seipd1.body.subarray(1)); // the legacy packet without integrity protection
    fails(gpgWith(concat(pk1.raw, sed)), /SED/);
    fails(gpgWith(concat(pk1.raw, withByte(seipd1.raw, 0, 0xc9))), /SED/); // the SEIPD tag turned into 9
    fails(gpgWith(concat(pk1.raw, oldPacket(9, seipd1.body.subarray(1), 2))), /SED/);
    fails(gpgWith(concat(pk1.raw, oldPacket(9, seipd1.body.subarray(1), 3))), /SED/); // indeterminate length
    fails(gpgWith(newPacket(11, bytes("b\u0000\u0000\u0000\u0000\u0000Hello Bob"))), /literal data/);
    fails(gpgWith(oldPacket(8, concat(new Uint8Array([0]), newPacket(11, bytes("b\u0000\u0000\u0000\u0000\u0000hi"))), 0)), /compressed data/);
    fails(gpgWith(concat(pk1.raw, newPacket(8, filler(100)))), /compressed data/);
    fails(gpgWith(concat(oldPacket(10, bytes("PGP"), 0), pk1.raw, seipd1.raw)), /marker/);
    fails(gpgWith(concat(newPacket(4, filler(13)), pk1.raw, seipd1.raw)), /one-pass signature/);
    fails(gpgWith(concat(newPacket(2, filler(100)), pk1.raw, seipd1.raw)), /signature/);
    fails(dcWith(concat(pk6.raw, newPacket(20, seipd2.body))), /OCB/);
    fails(dcWith(concat(pk6.raw, newPacket(6, filler(50)), seipd2.raw)), /tag 6/);
    fails(dcWith(concat(newPacket(0, filler(5)), seipd2.raw)), /tag 0/);
    fails(dcWith(concat(pk6.raw, newPacket(60, filler(5)), seipd2.raw)), /tag 60/);
  });

  test("unknown versions fail", () => {
    fails(gpgWith(concat(withByte(pk1.raw, 2, 5), seipd1.raw)), /PKESK version 5/);
    fails(dcWith(concat(withByte(pk6.raw, 2, 4), seipd2.raw)), /PKESK version 4/);
    fails(gpgWith(concat(withByte(skesk4.raw, 2, 5), seipd1.raw)), /SKESK version 5/);
    fails(gpgWith(concat(pk1.raw, withByte(seipd1.raw, 3, 3))), /SEIPD version 3/);
    fails(gpgWith(concat(pk1.raw, newPacket(18, new Uint8Array(0)))), /SEIPD version -1/);
    fails(gpgWith(concat(newPacket(1, new Uint8Array(0)), seipd1.raw)), /PKESK version -1/);
  });

  test("SEIPD v2 parameters are checked", () => {
    const at = seipd2.raw.length - seipd2.body.length; // body offset in the packet
    passes(dcWith(concat(pk6.raw, seipd2.raw)));
    fails(dcWith(concat(pk6.raw, withByte(seipd2.raw, at + 1, 0))), /SEIPD v2 parameters/); // cipher 0 = plaintext
    fails(dcWith(concat(pk6.raw, withByte(seipd2.raw, at + 2, 0))), /SEIPD v2 parameters/); // AEAD 0
    fails(dcWith(concat(pk6.raw, withByte(seipd2.raw, at + 2, 4))), /SEIPD v2 parameters/);
    fails(dcWith(concat(pk6.raw, withByte(seipd2.raw, at + 3, 17))), /SEIPD v2 parameters/); // chunk size over 2^22
    fails(dcWith(concat(pk6.raw, newPacket(18, seipd2.body.subarray(0, 51)))), /too short/);
    fails(gpgWith(concat(pk1.raw, newPacket(18, seipd1.body.subarray(0, 32)))), /too short/);
  });

  test("old-format headers of every definite length pass; indeterminate fails", () => {
    for (const t of [0, 1, 2] as const) passes(gpgWith(concat(oldPacket(1, pk1.body, t), oldPacket(3, skesk4.body, t), seipd1.raw)));
    fails(gpgWith(concat(oldPacket(1, pk1.body, 3), seipd1.raw)), /indeterminate/);
  });

  test("non-minimal and five-octet lengths pass", () => {
    passes(gpgWith(concat(newPacket(1, pk1.body, 5), newPacket(18, seipd1.body, 5))));
    passes(dcWith(concat(newPacket(1, pk6.body, 5), newPacket(18, seipd2.body, 5))));
    const big = newPacket(18, concat(new Uint8Array([1]), filler(70000))); // two-octet limit is 8383
    expect(big[1]).toBe(255);
    passes(gpgWith(concat(pk1.raw, big)));
  });

  test("lengths beyond the data fail", () => {
    const huge = concat(new Uint8Array([0xd2, 255, 0xff, 0xff, 0xff, 0xff]), seipd1.body);
    fails(gpgWith(concat(pk1.raw, huge)), /truncated/);
    fails(gpgWith(concat(pk1.raw, seipd1.raw.subarray(0, seipd1.raw.length - 1))), /truncated/);
    fails(gpgWith(concat(pk1.raw, new Uint8Array([0xd2, 255, 0, 0]))), /truncated packet header/);
    fails(gpgWith(concat(pk1.raw.subarray(0, 40))), /truncated/);
    fails(gpgWith(new Uint8Array([0x84])), /truncated packet header/);
    fails(gpgWith(new Uint8Array([0x85, 0])), /truncated packet header/);
  });

  test("not a packet header fails", () => {
    fails(gpgWith(concat(new Uint8Array([0x7f]), pk1.raw, seipd1.raw)), /not an OpenPGP packet/);
    fails(gpgWith(bytes("Hello Bob, plaintext in the armor")), /not an OpenPGP packet/);
  });

  test("partial body lengths: SEIPD only, first chunk at least 512 octets", () => {
    const body = concat(new Uint8Array([1]), filler(5000));
    passes(gpgWith(concat(pk1.raw, partialPacket(18, body, [9]))));
    passes(gpgWith(concat(pk1.raw, partialPacket(18, body, [12, 9, 0, 0, 5]))));
    passes(dcWith(concat(pk6.raw, partialPacket(18, concat(seipd2.body, filler(1000)), [10, 9]))));
    passes(gpgWith(concat(pk1.raw, partialPacket(18, body.subarray(0, 1024), [9, 9])))); // zero-length last chunk
    fails(gpgWith(concat(pk1.raw, partialPacket(18, body, [8, 10]))), /under 512/);
    fails(gpgWith(concat(partialPacket(1, concat(pk1.body, filler(600)), [9]), seipd1.raw)), /partial body length outside a SEIPD/);
    fails(gpgWith(concat(pk1.raw, partialPacket(18, body, [9]).subarray(0, 520))), /truncated SEIPD/);
    const noFinal = concat(pk1.raw, new Uint8Array([0xd2, 224 + 9]), body.subarray(0, 512)); // ends after a partial chunk
    fails(gpgWith(noFinal), /truncated SEIPD/);
    fails(gpgWith(concat(pk1.raw, partialPacket(18, body, [9]), new Uint8Array([1]))), /after the SEIPD/);
  });

  test("binary payloads follow the same rules", () => {
    const bin = (d: Uint8Array) => withPayload(GPG, Buffer.from(d).toString("latin1"));
    passes(bin(payloadOf(GPG)));
    fails(bin(concat(payloadOf(GPG), new Uint8Array([0xc0]))), /after the SEIPD/);
    fails(bin(concat(pk1.raw, newPacket(9, filler(100)))), /SED/);
  });
});

describe("ASCII armor", () => {
  const data = payloadOf(GPG);

  test("armor headers that RFC 9580 defines pass", () => {
    passes(gpgWith(data, { headers: ["Version: GnuPG v2", "Comment: https://gnupg.org", "Charset: UTF-8"] }));
    passes(dcWith(data, { headers: ["Comment:", "MessageID: abc"] }));
  });

  test("other armor headers, or headers without the blank line, fail", () => {
    fails(gpgWith(data, { headers: ["Hash: SHA256"] }), /armor header/);
    fails(gpgWith(data, { headers: ["X-Secret: plaintext for everyone"] }), /armor header/);
    fails(gpgWith(data, { headers: ["Comment: " + "plaintext ".repeat(120)] }), /too long/);
    fails(withPayload(GPG, armor(data, { eol: "\r\n" }).replace("-----\r\n\r\n", "-----\r\n")), /armor header/);
    fails(withPayload(GPG, armor(data, { eol: "\r\n" }).replace("-----\r\n\r\n", "-----\r\nVersion: 1\r\n")), /armor header/);
  });

  test("checksum line: optional, not verified, but must be well-formed", () => {
    passes(gpgWith(data, { crc: false }));
    passes(gpgWith(data, { crc: "=AAAA" })); // wrong CRC-24: RFC 9580 §6.1 says not to reject
    fails(gpgWith(data, { crc: "=AAA" }), /base64/);
    fails(gpgWith(data, { crc: "=AAAAA" }), /base64/);
    fails(gpgWith(data, { crc: "=AA!A" }), /base64/);
  });

  test("line layout: any width, CRLF or LF, trailing spaces pass", () => {
    passes(gpgWith(data, { lineLength: 76 }));
    passes(gpgWith(data, { lineLength: 4 }));
    passes(gpgWith(data, { lineLength: 10_000 }));
    passes(gpgWith(data, { lineLength: 7 })); // groups of four straddle the line breaks
    passes(withPayload(GPG, armor(data, { eol: "\r\n" }).replace(/\r\n/g, " \t\r\n")));
    passes(withPayload(GPG, "\r\n\r\n" + armor(data, { eol: "\r\n" }) + "\r\n \r\n"));
  });

  test("malformed base64 fails", () => {
    const a = armor(data, { eol: "\r\n" });
    const lines = a.split("\r\n");
    const edit = (i: number, f: (l: string) => string) => withPayload(GPG, lines.map((l, k) => (k === i ? f(l) : l)).join("\r\n"));
    fails(edit(3, (l) => l.slice(0, 10) + "*" + l.slice(11)), /bad base64/);
    fails(edit(3, (l) => l.slice(0, 10) + " " + l.slice(10)), /bad base64/); // space inside a line
    fails(edit(3, (l) => l.slice(0, 10) + "=" + l.slice(11)), /bad base64/); // padding in the middle
    fails(edit(3, (l) => l.slice(0, 10) + "-" + l.slice(11)), /bad base64/);
    expect(data.length % 3).toBe(1); // so the armor ends in "=="
    const unpadded = gpgWith(data, { crc: false }).replace("==\r\n-----END", "\r\n-----END");
    expect(unpadded).not.toBe(gpgWith(data, { crc: false }));
    fails(unpadded, /bad base64/);
    fails(withPayload(GPG, a.replace(/==\r\n=/, "==AAAA\r\n=")), /bad base64/); // data after the padding
    fails(withPayload(GPG, a.replace(/==\r\n=/, "==\r\nAAAA\r\n=")), /bad base64/);
  });

  test.each([
    ["GnuPG", GPG],
    ["Delta Chat", DC],
  ])("every base64 character of the %s armor matters: junk or a space in its place fails", (_, msg) => {
    const begin = msg.indexOf("-----BEGIN PGP MESSAGE-----");
    const from = msg.indexOf("\n\n", begin) >= 0 && msg.indexOf("\n\n", begin) < msg.indexOf("-----END") ? msg.indexOf("\n\n", begin) + 2 : msg.indexOf("\r\n\r\n", begin) + 4;
    const to = msg.lastIndexOf("\n=", msg.indexOf("-----END PGP MESSAGE-----"));
    let checked = 0;
    for (let i = from; i < to; i++) {
      if (!/[A-Za-z0-9+/=]/.test(msg[i]!)) continue;
      for (const junk of ["*", " ", "-", "\u00e4"]) expect(verdict(msg.slice(0, i) + junk + msg.slice(i + 1)).pass).toBe(false);
      checked++;
    }
    expect(checked).toBeGreaterThan(800);
  });

  test("anything outside the armor fails", () => {
    const a = armor(data, { eol: "\r\n" });
    fails(withPayload(GPG, "Hello Bob, here is the plaintext.\r\n" + a), /neither binary OpenPGP nor an armored/);
    fails(withPayload(GPG, a + "Hello Bob, here is the plaintext.\r\n"), /END PGP MESSAGE/);
    fails(withPayload(GPG, a + a), /base64|END PGP MESSAGE/);
    fails(withPayload(GPG, a.replace("-----END PGP MESSAGE-----", "")), /END PGP MESSAGE/);
    fails(withPayload(GPG, a.replace("-----END PGP MESSAGE-----", "-----END PGP SIGNATURE-----")), /END PGP MESSAGE/);
    fails(withPayload(GPG, a.replace("-----END PGP MESSAGE-----", "x-----END PGP MESSAGE-----")), /END PGP MESSAGE/);
    fails(withPayload(GPG, a.replace("BEGIN PGP MESSAGE", "BEGIN PGP MESSAGE, PART 1/2")), /armored PGP MESSAGE/);
    fails(withPayload(GPG, a.replace("BEGIN PGP MESSAGE", "BEGIN PGP SIGNATURE")), /neither binary/);
    fails(withPayload(GPG, a.replace("-----BEGIN PGP MESSAGE-----", "-----BEGIN PGP MESSAGE----- hi")), /BEGIN PGP MESSAGE/);
    fails(withPayload(GPG, "-----BEGIN PGP MESSAGE-----"), /BEGIN PGP MESSAGE/);
    fails(withPayload(GPG, "-----BEGIN PGP MESSAGE-----\r\n\r\n-----END PGP MESSAGE-----\r\n"), /empty/);
  });
});

describe("Base64Reader", () => {
  const enc = (s: Uint8Array, width = 64) => bytes((Buffer.from(s).toString("base64").match(new RegExp(`.{1,${width}}`, "g")) ?? []).join("\r\n"));

  test("skip and read agree with a plain decode at every offset and length", () => {
    const data = filler(700, 7);
    for (const width of [4, 7, 64, 76]) {
      const text = enc(data, width);
      for (let at = 0; at < 40; at++)
        for (const n of [0, 1, 2, 3, 4, 5, 100, 301, 700 - 40 - at]) {
          const r = new Base64Reader(text, 0, text.length);
          expect(r.skip(at)).toBe(true);
          expect(r.read()).toBe(data[at]!);
          expect(r.skip(n)).toBe(true);
          expect(r.read()).toBe(at + 1 + n < data.length ? data[at + 1 + n]! : -1);
        }
    }
  });

  test("the end is exact, padding included", () => {
    for (const len of [1, 2, 3, 4, 5, 6, 64, 65, 66]) {
      const text = enc(filler(len));
      const r = new Base64Reader(text, 0, text.length);
      expect(r.skip(len - 1)).toBe(true);
      expect(r.atEnd()).toBe(false);
      expect(r.read()).toBeGreaterThanOrEqual(0);
      expect(r.atEnd()).toBe(true);
      expect(new Base64Reader(text, 0, text.length).skip(len + 1)).toBe(false);
      expect(new Base64Reader(text, 0, text.length).skip(-1)).toBe(false);
    }
  });

  test("unpadded, overpadded and misplaced padding are malformed", () => {
    for (const bad of ["QQ", "QQ=", "Q===", "QQ==QQ==", "QUJD=", "=QUJD", "QU JD", "QUJD\r\nQ"]) {
      const r = new Base64Reader(bytes(bad), 0, bad.length);
      r.skip(10);
      expect([bad, r.atEnd(), r.malformed]).toEqual([bad, false, true]);
    }
  });
});

describe("large messages", () => {
  test("a 30 MB message passes, with a five-octet length or partial chunks", () => {
    passes(bigMessage(30 << 20));
    passes(bigMessage(30 << 20, true));
  }, 60_000);

  test("a bad character deep inside a 30 MB armor fails", () => {
    const m = bigMessage(30 << 20);
    const at = m.length - 1000;
    fails(m.slice(0, at) + "*" + m.slice(at + 1), /bad base64/);
  }, 60_000);
});
