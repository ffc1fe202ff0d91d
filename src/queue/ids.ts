// Queue ids: 16 characters, sortable by creation time (10 of time, 6 random), lower-case base32
// so they are easy to type in `madmail queue show ID`.
import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford: no i l o u

export function newQueueId(now = Date.now()): string {
  let t = now;
  let time = "";
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32]! + time;
    t = Math.floor(t / 32);
  }
  let tail = "";
  for (const b of randomBytes(6)) tail += ALPHABET[b % 32];
  return time + tail;
}
