// The DKIM RSA operation: the system OpenSSL (bun:ffi) and WebCrypto must give the same bytes
// as node:crypto, and the OpenSSL path must be the one used where libcrypto.so.3 exists.
import { describe, expect, test } from "bun:test";
import { generateKeyPairSync, sign, verify } from "node:crypto";
import { importRsaSigningKey } from "../../src/delivery/rsa-sign.ts";
import { HAS_LIBCRYPTO } from "../helpers/libcrypto.ts";

const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const inputs = [new Uint8Array(0), new Uint8Array([0x61]), new Uint8Array(600).fill(0x41), new Uint8Array(65_537).map((_, i) => i % 251)];

async function withOpenSsl<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
  const before = process.env.MADMAIL_DKIM_OPENSSL;
  if (on) delete process.env.MADMAIL_DKIM_OPENSSL;
  else process.env.MADMAIL_DKIM_OPENSSL = "0";
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.MADMAIL_DKIM_OPENSSL;
    else process.env.MADMAIL_DKIM_OPENSSL = before;
  }
}

describe("RSA signing for DKIM", () => {
  test.if(HAS_LIBCRYPTO)("the system OpenSSL is used where libcrypto.so.3 exists", async () => {
    const key = await importRsaSigningKey(privateKey);
    expect(key.backend).toBe("openssl");
  });

  test("MADMAIL_DKIM_OPENSSL=0 selects WebCrypto", async () => {
    const key = await withOpenSsl(false, () => importRsaSigningKey(privateKey));
    expect(key.backend).toBe("webcrypto");
  });

  for (const on of [true, false]) {
    test(`${on ? "default backend" : "WebCrypto"}: the same bytes as node:crypto, and they verify`, async () => {
      const key = await withOpenSsl(on, () => importRsaSigningKey(privateKey));
      for (const data of inputs) {
        const got = Buffer.from(await key.sign(data));
        expect(got.length).toBe(256);
        expect(got.equals(sign("sha256", data, privateKey))).toBe(true);
        expect(verify("sha256", data, publicKey, got)).toBe(true);
      }
    });
  }

  test("many signatures in flight, keys dropped and collected meanwhile: every signature is right", async () => {
    const data = new Uint8Array(700).fill(0x42);
    const want = sign("sha256", data, privateKey);
    const key = await importRsaSigningKey(privateKey);
    // Keys made and dropped: their native halves are freed when collected, never under a live one.
    for (let i = 0; i < 50; i++) await importRsaSigningKey(privateKey);
    Bun.gc(true);
    const sigs = await Promise.all(Array.from({ length: 200 }, () => key.sign(data)));
    Bun.gc(true);
    for (const s of sigs) expect(Buffer.from(s).equals(want)).toBe(true);
  });
});
