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
  /** 1 while local copies are being written (crash recovery looks into the Maildirs). */
  pending: Generated<number>;
  /** 1 once the remote recipients are queued (in the same transaction): a retry skips them. */
  queued: Generated<number>;
}

export type DeliveryState = "queued" | "deferred" | "held" | "delivering" | "delivered" | "dead";

interface MessagesTable {
  id: string;
  mail_from: string;
  body: Uint8Array;
  size: number;
  door: string;
  auth_user: string | null;
  received_at: Millis;
}

interface DeliveriesTable {
  id: string;
  message_id: string;
  rcpt_domain: string;
  /** JSON array of addresses. */
  rcpts: string;
  state: DeliveryState;
  route: string | null;
  tries: Generated<number>;
  next_attempt_at: Millis;
  lease_until: Millis | null;
  last_error: string | null;
  created_at: Millis;
  updated_at: Millis;
  expires_at: Millis;
  rerouted_to: string | null;
}

export type AttemptOutcome = "delivered" | "temporary" | "permanent" | "note";

interface DeliveryAttemptsTable {
  id: Generated<number>;
  delivery_id: string;
  at: Millis;
  transport: string;
  endpoint: string;
  outcome: AttemptOutcome;
  detail: string | null;
  ms: number | null;
}

interface EndpointCacheTable {
  domain: string;
  transport: string;
  endpoint: string;
  ok_at: Millis | null;
  fail_at: Millis | null;
}

interface FederationServerStatsTable {
  domain: string;
  attempts: Generated<number>;
  successes: Generated<number>;
  failures: Generated<number>;
  https_ok: Generated<number>;
  https_fail: Generated<number>;
  http_ok: Generated<number>;
  http_fail: Generated<number>;
  smtp_ok: Generated<number>;
  smtp_fail: Generated<number>;
  inbound: Generated<number>;
  latency_ms_total: Generated<number>;
  latency_count: Generated<number>;
  last_latency_ms: number | null;
  last_error: string | null;
  last_active_at: Millis | null;
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
  messages: MessagesTable;
  deliveries: DeliveriesTable;
  delivery_attempts: DeliveryAttemptsTable;
  endpoint_cache: EndpointCacheTable;
  federation_server_stats: FederationServerStatsTable;
}

export type MessageRow = Selectable<MessagesTable>;
export type DeliveryRow = Selectable<DeliveriesTable>;
export type DeliveryAttemptRow = Selectable<DeliveryAttemptsTable>;
export type EndpointCacheRow = Selectable<EndpointCacheTable>;
export type FederationStatsRow = Selectable<FederationServerStatsTable>;

export type DomainRow = Selectable<DomainsTable>;
export type UserRow = Selectable<UsersTable>;
export type DnsOverrideRow = Selectable<DnsOverridesTable>;
export type ExchangerRow = Selectable<ExchangersTable>;
export type NewExchanger = Insertable<ExchangersTable>;
export type ExchangerUpdate = Updateable<ExchangersTable>;
export type FederationRuleRow = Selectable<FederationRulesTable>;
