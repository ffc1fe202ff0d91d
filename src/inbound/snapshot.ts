// A running server's view of its configuration, rebuilt whenever another process (the CLI)
// has committed to the state file, so that a change applies to the very next message.
import type { OpenedDb } from "../db/open.ts";
import { loadConfig, type Config } from "../db/settings.ts";
import { listDomains } from "../policy/local-domains.ts";
import { listRules, toRules, type FederationRules } from "../policy/federation.ts";
import { listExchangers } from "../exchanger/exchangers.ts";
import type { DnsOverrideRow, ExchangerRow } from "../db/schema.ts";
import { loadOverrides } from "../delivery/endpoint-overrides.ts";

export interface Snapshot {
  config: Config;
  localDomains: ReadonlySet<string>;
  rules: FederationRules;
  exchangers: readonly ExchangerRow[];
  /** Endpoint rewrites by lookup key; only the CLI changes them. */
  overrides: ReadonlyMap<string, DnsOverrideRow>;
}

export interface SnapshotSource {
  /** The current snapshot; reloads first if the file changed elsewhere. */
  get(): Promise<Snapshot>;
}

export function createSnapshotSource(state: OpenedDb): SnapshotSource {
  let current: Promise<Snapshot> | null = null;
  let version = -1;
  const load = async (): Promise<Snapshot> => {
    const config = await loadConfig(state.db);
    const [domains, rows, exchangers, overrides] = [await listDomains(state.db), await listRules(state.db), await listExchangers(state.db), await loadOverrides(state.db)];
    return { config, localDomains: new Set(domains.map((d) => d.name)), rules: toRules(config["federation.policy"], rows), exchangers, overrides };
  };
  return {
    get() {
      const v = state.dataVersion();
      if (!current || v !== version) {
        version = v;
        current = load();
      }
      return current;
    },
  };
}
