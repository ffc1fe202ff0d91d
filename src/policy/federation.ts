// Federation policy: which sender domains may deliver here. ACCEPT mode treats the rules as a
// blocklist, REJECT mode as an allowlist; the dismiss list answers success and keeps nothing.
// A rule for example.org also covers its subdomains (mx.example.org), as mail domains and
// their hosts usually share a parent.
import type { Db } from "../db/open.ts";
import type { FederationRuleRow } from "../db/schema.ts";

export type PolicyMode = "accept" | "reject";
export type RuleKind = FederationRuleRow["kind"];
export type PolicyVerdict = "accept" | "reject" | "dismiss";

export interface FederationRules {
  mode: PolicyMode;
  block: ReadonlySet<string>;
  allow: ReadonlySet<string>;
  dismiss: ReadonlySet<string>;
}

export function toRules(mode: PolicyMode, rows: Pick<FederationRuleRow, "domain" | "kind">[]): FederationRules {
  const by = (k: RuleKind) => new Set(rows.filter((r) => r.kind === k).map((r) => r.domain));
  return { mode, block: by("block"), allow: by("allow"), dismiss: by("dismiss") };
}

/** `a.b.example.org` -> [a.b.example.org, b.example.org, example.org, org]. */
function withParents(domain: string): string[] {
  const labels = domain.split(".");
  return labels.map((_, i) => labels.slice(i).join("."));
}

const matches = (set: ReadonlySet<string>, domain: string) => set.size > 0 && withParents(domain).some((d) => set.has(d));

/**
 * The verdict for mail from `domain` (null when the sender has no domain at all).
 * Local domains always pass.
 */
export function federationVerdict(rules: FederationRules, domain: string | null, isLocal: (d: string) => boolean): PolicyVerdict {
  if (domain === null) return rules.mode === "accept" ? "accept" : "reject";
  if (isLocal(domain)) return "accept";
  if (matches(rules.dismiss, domain)) return "dismiss";
  if (rules.mode === "accept") return matches(rules.block, domain) ? "reject" : "accept";
  return matches(rules.allow, domain) ? "accept" : "reject";
}

export async function listRules(db: Db): Promise<FederationRuleRow[]> {
  return db.selectFrom("federation_rules").selectAll().orderBy("domain").orderBy("kind").execute();
}

/** Returns false when the rule was there already. */
export async function addRule(db: Db, domain: string, kind: RuleKind, now = Date.now()): Promise<boolean> {
  const r = await db.insertInto("federation_rules").values({ domain, kind, created_at: now })
    .onConflict((oc) => oc.columns(["domain", "kind"]).doNothing()).executeTakeFirst();
  return (r.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

/** Removes rules of the given kinds for a domain; returns how many went. */
export async function removeRules(db: Db, domain: string, kinds: RuleKind[]): Promise<number> {
  const r = await db.deleteFrom("federation_rules").where("domain", "=", domain).where("kind", "in", kinds).executeTakeFirst();
  return Number(r.numDeletedRows);
}
