// Who is calling: an exchanger partner presents the token `madmail exchanger token NAME`
// printed (we keep only its hash). Unknown, wrong and disabled tokens look the same.
import type { Db } from "../db/open.ts";
import type { ExchangerRow } from "../db/schema.ts";
import { tokenMatches } from "../util/secrets.ts";

export function bearerToken(header: string | null): string | null {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m ? m[1]! : null;
}

/** The enabled exchanger whose token this is, or null. Every stored hash is compared, always. */
export async function exchangerByToken(db: Db, token: string | null): Promise<ExchangerRow | null> {
  const rows = await db.selectFrom("exchangers").selectAll().where("token_hash", "is not", null).execute();
  let found: ExchangerRow | null = null;
  for (const row of rows) {
    // No early exit: the time taken does not depend on which row (if any) matches.
    if (tokenMatches(token ?? "", row.token_hash) && token && row.enabled === 1) found = row;
  }
  return found;
}

/** Failed attempts per client address: past `limit` within `windowMs`, refuse for a while. */
export function createFailureLimiter(limit = 10, windowMs = 10 * 60_000) {
  const failures = new Map<string, number[]>();
  return {
    blocked(peer: string, now = Date.now()): boolean {
      const list = (failures.get(peer) ?? []).filter((t) => now - t < windowMs);
      if (list.length) failures.set(peer, list);
      else failures.delete(peer);
      return list.length >= limit;
    },
    fail(peer: string, now = Date.now()): void {
      const list = failures.get(peer) ?? [];
      list.push(now);
      failures.set(peer, list.slice(-limit * 2));
      // Keep the map small under a spray of addresses.
      if (failures.size > 10_000) failures.delete(failures.keys().next().value!);
    },
    succeed(peer: string): void {
      failures.delete(peer);
    },
  };
}
