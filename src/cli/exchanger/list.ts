import { command } from "../_command.ts";
import { readArgs } from "../_args.ts";
import { existingDb } from "../_db.ts";
import { printJson, printTable, say } from "../_output.ts";
import { listExchangers } from "../../exchanger/exchangers.ts";
import type { ExchangerRow } from "../../db/schema.ts";
import { isoTime, tableTime } from "../../util/time.ts";
import { isStale } from "../../exchanger/exchanger-status.ts";

export const exchangerJson = (r: ExchangerRow) => ({
  name: r.name,
  url: r.url,
  mode: r.mode,
  domains: r.domains ? r.domains.split(",") : [],
  poll_interval: r.poll_interval,
  enabled: r.enabled === 1,
  fallback: r.fallback === 1,
  has_token: r.token_hash !== null,
  last_poll_at: isoTime(r.last_poll_at),
  last_pull_at: isoTime(r.last_pull_at),
  last_error: r.last_error,
  has_remote_token: r.remote_token !== null,
  stale: isStale(r),
  created_at: isoTime(r.created_at),
  updated_at: isoTime(r.updated_at),
});

export default command({
  meta: { name: "list", description: "List exchangers with their mode, domains and last poll/pull" },
  args: readArgs,
  examples: ["madmail exchanger list", "madmail exchanger list --json | jq '.[] | select(.enabled)'"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const rows = await listExchangers(db);
      if (args.json) return printJson(rows.map(exchangerJson));
      if (!rows.length) return say(args, "No exchangers. Add one with `madmail exchanger add NAME URL`.");
      printTable(
        ["NAME", "URL", "MODE", "DOMAINS", "INTERVAL", "ENABLED", "LAST POLL", "LAST PULL"],
        rows.map((r) => [
          r.name + (r.fallback ? " (fallback)" : ""),
          r.url,
          r.mode,
          r.domains || "-",
          `${r.poll_interval}s`,
          r.enabled ? (isStale(r) ? "STALE" : "yes") : "no",
          tableTime(r.last_poll_at),
          tableTime(r.last_pull_at),
        ]),
      );
    }),
});
