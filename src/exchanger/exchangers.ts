// Exchanger entries: validation of what a sysadmin types, and the repository.
import type { Db } from "../db/open.ts";
import type { ExchangerRow, ExchangerUpdate, NewExchanger } from "../db/schema.ts";
import { usageError } from "../errors.ts";
import { normaliseDomain, normaliseHost } from "../util/names.ts";

export const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const POLL_MIN = 5;
export const POLL_MAX = 86400;
export const POLL_DEFAULT = 60;

export function checkName(name: string): string {
  if (!NAME_RE.test(name)) {
    throw usageError(`invalid exchanger name "${name}": use 1-63 characters a-z 0-9 . _ - starting with a letter or digit`);
  }
  return name;
}

export function checkUrl(input: string): string {
  let u: URL | undefined;
  try {
    u = new URL(input.trim());
  } catch {}
  // No query or fragment: endpoints are appended to the path.
  if (!u || (u.protocol !== "http:" && u.protocol !== "https:") || !normaliseHost(u.hostname) || u.username || u.password || u.search || u.hash) {
    throw usageError(`invalid exchanger URL "${input}": expected http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]`);
  }
  // Base URL: endpoints (/mxdeliv, /exchanger/pull) are appended to it.
  return u.toString().replace(/\/+$/, "");
}

export function checkPollInterval(input: string): number {
  const n = /^\d+$/.test(input.trim()) ? Number(input) : NaN;
  if (!(n >= POLL_MIN && n <= POLL_MAX)) {
    throw usageError(`invalid poll interval "${input}": expected whole seconds from ${POLL_MIN} to ${POLL_MAX}`);
  }
  return n;
}

/** `*` or a comma list of domains; normalised, deduplicated, sorted. */
export function checkDomains(input: string): string {
  const items = input.split(",").map((s) => s.trim()).filter(Boolean);
  // Only an empty value clears the list on purpose; "," is a typo, not a request to route nothing.
  if (!items.length && input.trim()) throw usageError(`no domain in --domains "${input}": expected a comma list of domains (a.example,b.example), * , or '' for none`);
  if (items.length === 1 && items[0] === "*") return "*";
  const out = new Set<string>();
  for (const item of items) {
    const d = normaliseDomain(item);
    if (!d) throw usageError(`invalid domain "${item}" in --domains: expected a comma list of domains (a.example,b.example) or *`);
    out.add(d);
  }
  return [...out].sort().join(",");
}

export function checkMode(input: string): "push" | "pull" {
  if (input !== "push" && input !== "pull") throw usageError(`invalid mode "${input}": expected push or pull`);
  return input;
}

export async function listExchangers(db: Db): Promise<ExchangerRow[]> {
  return db.selectFrom("exchangers").selectAll().orderBy("name").execute();
}

export async function findExchanger(db: Db, name: string): Promise<ExchangerRow | undefined> {
  return db.selectFrom("exchangers").selectAll().where("name", "=", name).executeTakeFirst();
}

/** Inserts; returns false when the name is taken (nothing written). */
export async function insertExchanger(db: Db, row: NewExchanger): Promise<boolean> {
  const r = await db.insertInto("exchangers").values(row).onConflict((oc) => oc.column("name").doNothing()).executeTakeFirst();
  return (r.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

/** Updates; returns false when there is no such exchanger. */
export async function updateExchanger(db: Db, name: string, changes: ExchangerUpdate): Promise<boolean> {
  const r = await db.updateTable("exchangers").set({ ...changes, updated_at: Date.now() }).where("name", "=", name).executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

export async function deleteExchanger(db: Db, name: string): Promise<boolean> {
  const r = await db.deleteFrom("exchangers").where("name", "=", name).executeTakeFirst();
  return r.numDeletedRows > 0n;
}
