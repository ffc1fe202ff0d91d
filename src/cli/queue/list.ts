import type { CommandDef } from "citty";
import { command } from "../_command.ts";
import { readArgs } from "../_args.ts";
import { existingDb } from "../_db.ts";
import { printJson, printTable, say } from "../_output.ts";
import { checkDomainArg } from "../domain.ts";
import { LIST_HEADERS, entryJson, listRow, plural } from "./_format.ts";
import { DELIVERY_STATES, PENDING_STATES, listQueue, type QueueFilter } from "../../queue/queue-admin.repository.ts";
import type { DeliveryState } from "../../db/schema.ts";
import { usageError } from "../../errors.ts";

const DEFAULT_LIMIT = 100;

const pageArgs = {
  domain: { type: "string", valueHint: "DOMAIN", description: "Only entries for this destination domain" },
  limit: { type: "string", valueHint: "N", description: `Show the oldest N entries (default ${DEFAULT_LIMIT}; 0 = all)` },
} as const;

function checkLimit(input: string | undefined): number | null {
  if (input === undefined) return DEFAULT_LIMIT;
  if (!/^\d{1,9}$/.test(input.trim())) throw usageError(`invalid --limit "${input}": expected a whole number (0 = all)`);
  return Number(input) || null;
}

async function runList(args: { db?: string; json?: boolean; quiet?: boolean; domain?: string; limit?: string }, states: readonly DeliveryState[], empty: string): Promise<void> {
  const filter: QueueFilter = { states, ...(args.domain === undefined ? {} : { domain: checkDomainArg(args.domain) }) };
  const limit = checkLimit(args.limit);
  await existingDb(args, async ({ db }) => {
    const now = Date.now();
    const { rows, matching } = await listQueue(db, filter, limit);
    if (args.json) printJson(rows.map(entryJson));
    else if (!rows.length) say(args, empty);
    else printTable(LIST_HEADERS, rows.map((r) => listRow(r, now)));
    if (rows.length < matching && !args.quiet) {
      process.stderr.write(`Showing the oldest ${rows.length} of ${plural(matching, "entry", "entries")}; --limit 0 shows all.\n`);
    }
  });
}

const list = command({
  meta: { name: "list", description: "List queue entries (one per message and destination domain), oldest first" },
  args: {
    state: { type: "enum", options: [...DELIVERY_STATES], description: "Only entries in this state (default: every state but delivered)" },
    ...pageArgs,
    ...readArgs,
  },
  examples: [
    "madmail queue list",
    "madmail queue list --state deferred --domain b.example",
    "madmail queue list --limit 0 --json | jq -r '.[] | select(.tries > 10) | .id'",
  ],
  run: ({ args }) => runList(args, args.state ? [args.state as DeliveryState] : PENDING_STATES, args.state || args.domain ? "No queue entries match." : "The queue is empty."),
});

const dead = command({
  meta: { name: "dead", description: "List dead entries: given up after a permanent failure or at the end of their lifetime" },
  args: { ...pageArgs, ...readArgs },
  examples: ["madmail queue dead", "madmail queue dead --json | jq -r '.[].last_error'"],
  run: ({ args }) => runList(args, ["dead"], "No dead queue entries."),
});

export default { list, dead } as Record<string, CommandDef<any>>;
