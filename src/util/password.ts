// User passwords: scrypt (node:crypto), self-describing so parameters can change later.
// Format: scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";
import { availableParallelism } from "node:os";
import { createLimit } from "./limit.ts";

const LOG_N = 15; // N = 32768: ~50 ms and 32 MiB per check on a small VM
const R = 8;
const P = 1;
const KEYLEN = 32;

/**
 * Checks at once. Each holds 128 × N × r bytes (32 MiB) while it runs on the I/O thread pool
 * (16 threads: io-threads.ts): twenty submission clients logging in together took serve from
 * 80 MB to 650 MB. More checks at once than cores are no faster, so the rest wait their turn;
 * the pool stays free for Maildir writes meanwhile.
 */
export const PARALLEL_CHECKS = Math.max(1, Math.min(4, availableParallelism()));
const limit = createLimit(PARALLEL_CHECKS);

function derive(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return limit(() => new Promise((resolve, reject) =>
    scrypt(password.normalize("NFC"), salt, KEYLEN, { ...opts, maxmem: 256 * opts.N! * opts.r! }, (err, key) => (err ? reject(err) : resolve(key))),
  ));
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, { N: 2 ** LOG_N, r: R, p: P });
  return `scrypt$${LOG_N}$${R}$${P}$${salt.toString("base64")}$${key.toString("base64")}`;
}

/** Constant-time check; a malformed or missing hash never matches (but costs the same work). */
export async function verifyPassword(password: string, stored: string | null): Promise<boolean> {
  const m = stored ? /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(stored) : null;
  const salt = m ? Buffer.from(m[4]!, "base64") : randomBytes(16);
  const expected = m ? Buffer.from(m[5]!, "base64") : randomBytes(KEYLEN);
  const opts = m ? { N: 2 ** Number(m[1]), r: Number(m[2]), p: Number(m[3]) } : { N: 2 ** LOG_N, r: R, p: P };
  const key = await derive(password, salt, opts);
  return key.length === expected.length && timingSafeEqual(key, expected) && m !== null;
}
