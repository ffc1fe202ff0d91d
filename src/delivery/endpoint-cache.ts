// What worked last per destination domain (table endpoint_cache), so the router tries it
// first next time.
import type { Kysely } from "kysely";
import type { Db } from "../db/open.ts";
import type { Database, EndpointCacheRow } from "../db/schema.ts";

export async function findLearnedEndpoint(db: Db, domain: string): Promise<EndpointCacheRow | undefined> {
  return db.selectFrom("endpoint_cache").selectAll().where("domain", "=", domain).executeTakeFirst();
}

/** Records a success ("transport", "endpoint" as in candidateKey) or a failure of the cached one. */
export async function learnEndpoint(trx: Kysely<Database>, domain: string, transport: string, endpoint: string, ok: boolean, now = Date.now()): Promise<void> {
  if (ok) {
    await trx.insertInto("endpoint_cache").values({ domain, transport, endpoint, ok_at: now, fail_at: null })
      .onConflict((oc) => oc.column("domain").doUpdateSet({ transport, endpoint, ok_at: now })).execute();
  } else {
    await trx.updateTable("endpoint_cache").set({ fail_at: now }).where("domain", "=", domain).where("transport", "=", transport).where("endpoint", "=", endpoint).execute();
  }
}
