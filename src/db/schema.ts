// Kysely types for the one state file. Column types are what the libsql driver returns:
// INTEGER -> number, TEXT -> string, BLOB -> Buffer, NULL -> null.
import type { Generated, Insertable, Selectable, Updateable } from "kysely";

/** Unix time in milliseconds. */
export type Millis = number;

interface SettingsTable {
  key: string;
  value: string;
}

/** Internal state that is not configuration (admin token hash, ...). */
interface MetaTable {
  key: string;
  value: string;
}

interface DomainsTable {
  name: string;
  created_at: Millis;
}

interface UsersTable {
  address: string;
  password_hash: string | null;
  quota_bytes: number | null;
  used_bytes: Generated<number>;
  created_at: Millis;
}

interface DnsOverridesTable {
  lookup_key: string;
  target_host: string;
  comment: string | null;
  created_at: Millis;
  updated_at: Millis;
}

interface ExchangersTable {
  name: string;
  url: string;
  enabled: Generated<number>;
  mode: "push" | "pull";
  poll_interval: number;
  domains: string;
  fallback: Generated<number>;
  token_hash: string | null;
  remote_token: string | null;
  last_poll_at: Millis | null;
  last_pull_at: Millis | null;
  last_error: string | null;
  created_at: Millis;
  updated_at: Millis;
}

interface FederationRulesTable {
  domain: string;
  kind: "block" | "allow" | "dismiss";
  created_at: Millis;
}

interface DeliveryIdsTable {
  id: string;
  seen_at: Millis;
}

export interface Database {
  settings: SettingsTable;
  meta: MetaTable;
  domains: DomainsTable;
  users: UsersTable;
  dns_overrides: DnsOverridesTable;
  exchangers: ExchangersTable;
  federation_rules: FederationRulesTable;
  delivery_ids: DeliveryIdsTable;
}

export type DomainRow = Selectable<DomainsTable>;
export type UserRow = Selectable<UsersTable>;
export type DnsOverrideRow = Selectable<DnsOverridesTable>;
export type ExchangerRow = Selectable<ExchangersTable>;
export type NewExchanger = Insertable<ExchangersTable>;
export type ExchangerUpdate = Updateable<ExchangersTable>;
export type FederationRuleRow = Selectable<FederationRulesTable>;
