// Bearer tokens: random, shown once, stored as SHA-256 (they carry 256 bits of entropy, so a
// slow KDF adds nothing), compared in constant time.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

export function newToken(prefix: string): string {
  return `${prefix}_${randomBytes(32).toString("base64url")}`;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Constant-time check of a presented token against a stored hash. */
export function tokenMatches(presented: string, storedHash: string | null | undefined): boolean {
  const a = Buffer.from(hashToken(presented), "hex");
  const b = Buffer.from(storedHash && /^[0-9a-f]{64}$/.test(storedHash) ? storedHash : "0".repeat(64), "hex");
  return timingSafeEqual(a, b) && !!storedHash;
}
