// A signs outbound mail with the key `madmail dkim generate` made; the copy B stored verifies
// with mailauth against exactly the TXT record the command printed.
import { afterAll, expect, test } from "bun:test";
import { dkimVerify } from "mailauth/lib/dkim/verify";
import { randomBytes } from "node:crypto";
import * as openpgp from "openpgp";
import type { ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew, readDelivered } from "../inbound/_fixtures.ts";
import { startPair } from "./_two-servers.ts";
import { HAS_LIBCRYPTO } from "../helpers/libcrypto.ts";

const running: ServerHandle[] = [];
afterAll(async () => {
  for (const s of running) {
    await s.stop().catch(() => {});
    s.box.cleanup();
  }
});

test("outbound mail carries a DKIM signature that verifies against the printed DNS record", async () => {
  const { a, b } = await startPair();
  running.push(a, b);
  const gen = await a.box.run(["dkim", "generate", "a.test", "--selector", "s1"]);
  expect(gen.code).toBe(0);
  const m = /^(\S+)\. IN TXT \( ((?:"[^"]{0,255}" )+)\)$/.exec(gen.stdout.trim())!;
  const record = { name: m[1]!, txt: [...m[2]!.matchAll(/"([^"]*)"/g)].map((x) => x[1]).join("") };
  expect(record.name).toBe("s1._domainkey.a.test");

  expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  const deadline = Date.now() + 15_000;
  while (!maildirNew(b, "bob@b.test").length && Date.now() < deadline) await Bun.sleep(50);
  const stored = readDelivered(b, "bob@b.test")[0]!;
  expect(stored.toString("latin1")).toStartWith("DKIM-Signature: ");
  const resolver = async (name: string, type: string) => {
    if (type === "TXT" && name === record.name) return [[record.txt]];
    throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
  };
  const r = await dkimVerify(stored, { resolver });
  expect(r.results[0]!.status.result).toBe("pass");
  expect(r.results[0]!.signingDomain).toBe("a.test");
  // The rest of the message is what alice sent, untouched.
  expect(stored.subarray(stored.length - ENCRYPTED().length).equals(ENCRYPTED())).toBe(true);
  // Signed on the signing thread (only it announces the key), by OpenSSL where it is installed;
  // a thread that cannot start inside the executable falls back silently but for this warning.
  expect(a.logs()).not.toContain("signing thread");
  expect(a.logs()).toContain(`[dkim] signing for a.test with selector s1 (${HAS_LIBCRYPTO ? "system OpenSSL" : "WebCrypto"})`);
}, 60_000);

test("only mail that started here is signed: a stranger relaying through relay.domains as a local sender gets no signature", async () => {
  const { a, b } = await startPair({ aSetup: [["config", "set", "relay.domains", "b.test"]] });
  running.push(a, b);
  expect((await a.box.run(["dkim", "generate", "a.test", "--selector", "s1"])).code).toBe(0);
  // No AUTH, no token: anyone may hand A mail for b.test, and may claim any sender.
  const res = await fetch(`http://127.0.0.1:${a.httpPort}/mxdeliv`, {
    method: "POST", headers: { "X-Mail-From": "alice@a.test", "X-Mail-To": "bob@b.test" }, body: ENCRYPTED(),
  });
  expect(res.status).toBe(200);
  const deadline = Date.now() + 15_000;
  while (!maildirNew(b, "bob@b.test").length && Date.now() < deadline) await Bun.sleep(50);
  expect(readDelivered(b, "bob@b.test")[0]!.equals(ENCRYPTED())).toBe(true);
  // alice herself (here: `madmail send`) still gets her signature.
  expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  while (maildirNew(b, "bob@b.test").length < 2 && Date.now() < deadline) await Bun.sleep(50);
  const signed = readDelivered(b, "bob@b.test").filter((m) => m.toString("latin1").startsWith("DKIM-Signature: "));
  expect(signed).toHaveLength(1);
}, 60_000);

test("a binary OpenPGP body with bare CRs leaves over HTTP byte for byte (it was rewritten to CRLF and refused by the peer's gate), signed, verifying", async () => {
  const { a, b } = await startPair();
  running.push(a, b);
  const gen = await a.box.run(["dkim", "generate", "a.test", "--selector", "s1"]);
  const m = /^(\S+)\. IN TXT \( ((?:"[^"]{0,255}" )+)\)$/.exec(gen.stdout.trim())!;
  const record = { name: m[1]!, txt: [...m[2]!.matchAll(/"([^"]*)"/g)].map((x) => x[1]).join("") };
  // A binary PGP/MIME message (RFC 3156 allows Content-Transfer-Encoding: binary); random
  // ciphertext of this size holds bare CR bytes.
  let message: Buffer;
  do {
    const enc = await openpgp.encrypt({ message: await openpgp.createMessage({ binary: randomBytes(4000) }), passwords: ["pw"], format: "binary" });
    const head = ["From: <alice@a.test>", "To: <bob@b.test>", "Subject: [...]", "MIME-Version: 1.0",
      'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"', "", "--b", "Content-Type: application/pgp-encrypted", "",
      "Version: 1", "", "--b", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: binary", "", ""].join("\r\n");
    message = Buffer.concat([Buffer.from(head), Buffer.from(enc), Buffer.from("\r\n--b--\r\n")]);
  } while (!message.some((x, i) => x === 13 && message[i + 1] !== 10));
  expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: message })).code).toBe(0);
  const deadline = Date.now() + 15_000;
  while (!maildirNew(b, "bob@b.test").length && Date.now() < deadline) await Bun.sleep(50);
  const stored = readDelivered(b, "bob@b.test")[0]!;
  expect(stored.subarray(stored.length - message.length).equals(message)).toBe(true);
  const resolver = async (name: string, type: string) => {
    if (type === "TXT" && name === record.name) return [[record.txt]];
    throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
  };
  expect((await dkimVerify(stored, { resolver })).results[0]!.status.result).toBe("pass");
}, 60_000);
