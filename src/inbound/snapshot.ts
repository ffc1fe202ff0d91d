// A running server's view of its configuration, rebuilt whenever another process (the CLI)
// has committed to the state file, so that a change applies to the very next message.
import type { OpenedDb } from "../db/open.ts";
import { loadConfig, type Config } from "../db/settings.ts";
import { listDomains } from "../policy/local-domains.ts";
import { listRules, toRules, type FederationRules } from "../policy/federation.ts";

export interface Snapshot {
  config: Config;
  localDomains: ReadonlySet<string>;
  rules: FederationRules;
}

export interface SnapshotSource {
  /** The current snapshot; reloads first if the file changed elsewhere. */
  get(): Promise<Snapshot>;
}

export function createSnapshotSource(state: OpenedDb): SnapshotSource {
  let current: Promise<Snapshot> | null = null;
  const load = async (): Promise<Snapshot> => {
    const config = await loadConfig(state.db);
    const [domains, rows] = await Promise.all([listDomains(state.db), listRules(state.db)]);
    return { config, localDomains: new Set(domains.map((d) => d.name)), rules: toRules(config["federation.policy"], rows) };
  };
  return {
    get() {
      if (!current || state.changedElsewhere()) current = load();
      return current;
    },
  };
}
