// Endpoint rewrites (table dns_overrides): a recipient domain (or host) whose mail goes to
// another target than DNS says. Keys and targets are normalised here, once.
import type { Db } from "../db/open.ts";
import type { DnsOverrideRow } from "../db/schema.ts";
import { usageError } from "../errors.ts";
import { hostForUrl, normaliseDomain, normaliseHost } from "../util/names.ts";

export const TARGET_FORMS =
  "a host name (b.example), an IP (1.2.3.4, [2001:db8::1]), host:port (b.example:8443), " +
  "an http(s) URL (https://b.example/mxdeliv; path defaults to /mxdeliv) or exchanger:NAME";

/** Normalises a lookup key: domain, IP literal, or `*.domain` wildcard. */
export function normaliseLookupKey(input: string): string {
  const t = input.trim().toLowerCase();
  if (t.startsWith("*.")) {
    const d = normaliseDomain(t.slice(2));
    if (d) return `*.${d}`;
  } else {
    const h = normaliseHost(t);
    if (h) return h;
  }
  throw usageError(`invalid lookup key "${input}": expected a domain (a.example), a wildcard (*.a.example) or an IP literal (1.2.3.4, [2001:db8::1])`);
}

export type ParsedTarget =
  | { kind: "host"; host: string; port: number | null }
  | { kind: "url"; url: string }
  | { kind: "exchanger"; name: string };

/** Parses and normalises a rewrite target; throws a usage error listing the allowed forms. */
export function parseTarget(input: string): ParsedTarget {
  const t = input.trim();
  const bad = () => usageError(`invalid target "${input}": expected ${TARGET_FORMS}`);
  if (/^exchanger:/i.test(t)) {
    const name = t.slice("exchanger:".length);
    if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) throw bad();
    return { kind: "exchanger", name };
  }
  if (/^https?:\/\//i.test(t)) {
    let u: URL;
    try {
      u = new URL(t);
    } catch {
      throw bad();
    }
    const host = normaliseHost(u.hostname);
    // The URL parser rewrites some hosts (10.1.5 -> 10.1.0.5, 2130706433 -> 127.0.0.1): the
    // host must be the one written, as in the HOST form.
    const written = /^https?:\/\/(\[[^\]]*\]|[^/:?#]*)/i.exec(t)?.[1] ?? "";
    if (!host || normaliseHost(written) !== host || u.port === "0" || u.username || u.password || u.search || u.hash) throw bad();
    if (u.pathname === "/" || u.pathname === "") u.pathname = "/mxdeliv";
    return { kind: "url", url: u.toString() };
  }
  const hp = /^(\[[^\]]+\]|[^:\[\]]+)(?::(\d{1,5}))?$/.exec(t);
  if (hp) {
    const host = normaliseHost(hp[1]!);
    const port = hp[2] === undefined ? null : Number(hp[2]);
    if (host && (port === null || (port >= 1 && port <= 65535))) return { kind: "host", host, port };
  }
  // A bare IPv6 address has colons of its own.
  const ip6 = normaliseHost(t);
  if (ip6) return { kind: "host", host: ip6, port: null };
  throw bad();
}

export function formatTarget(t: ParsedTarget): string {
  switch (t.kind) {
    case "exchanger":
      return `exchanger:${t.name}`;
    case "url":
      return t.url;
    case "host":
      return t.port === null ? (t.host.includes(":") ? `[${t.host}]` : t.host) : `${hostForUrl(t.host)}:${t.port}`;
  }
}

export async function listOverrides(db: Db): Promise<DnsOverrideRow[]> {
  return db.selectFrom("dns_overrides").selectAll().orderBy("lookup_key").execute();
}

export async function findOverride(db: Db, key: string): Promise<DnsOverrideRow | undefined> {
  return db.selectFrom("dns_overrides").selectAll().where("lookup_key", "=", key).executeTakeFirst();
}

/** Inserts or updates; returns whether the key existed. */
export async function upsertOverride(db: Db, key: string, target: string, comment: string | null, now = Date.now()): Promise<boolean> {
  const existing = await findOverride(db, key);
  await db.insertInto("dns_overrides")
    .values({ lookup_key: key, target_host: target, comment, created_at: now, updated_at: now })
    .onConflict((oc) => oc.column("lookup_key").doUpdateSet({ target_host: target, comment, updated_at: now }))
    .execute();
  return existing !== undefined;
}

export async function deleteOverride(db: Db, key: string): Promise<boolean> {
  const r = await db.deleteFrom("dns_overrides").where("lookup_key", "=", key).executeTakeFirst();
  return r.numDeletedRows > 0n;
}

export async function overridesPointingAt(db: Db, exchanger: string): Promise<string[]> {
  const rows = await db.selectFrom("dns_overrides").select("lookup_key").where("target_host", "=", `exchanger:${exchanger}`)
    .orderBy("lookup_key").execute();
  return rows.map((r) => r.lookup_key);
}

/** Every override by its key: a running server keeps them in its snapshot. */
export async function loadOverrides(db: Db): Promise<Map<string, DnsOverrideRow>> {
  return new Map((await listOverrides(db)).map((r) => [r.lookup_key, r]));
}

/**
 * The override for a domain: exact key first, then the longest matching `*.` wildcard
 * (`*.example.org` matches `a.example.org` and `b.a.example.org`, not `example.org`).
 */
export function matchOverride(overrides: ReadonlyMap<string, DnsOverrideRow>, domain: string): DnsOverrideRow | undefined {
  const exact = overrides.get(domain);
  if (exact) return exact;
  const labels = domain.split(".");
  for (let i = 1; i < labels.length; i++) {
    const wild = overrides.get(`*.${labels.slice(i).join(".")}`);
    if (wild) return wild;
  }
  return undefined;
}
