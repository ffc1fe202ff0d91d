import { command } from "../_command.ts";
import { readArgs } from "../_args.ts";
import { existingDb } from "../_db.ts";
import { printJson, say } from "../_output.ts";
import { checkName, findExchanger } from "../../exchanger/exchangers.ts";
import { heldFor, isStale } from "../../exchanger/exchanger-status.ts";
import { notFound } from "../../errors.ts";
import { isoTime, tableTime } from "../../util/time.ts";
import { formatDuration } from "../../util/units.ts";

export default command({
  meta: { name: "status", description: "Held mail, last pull and poll, last error of one exchanger" },
  args: { name: { type: "positional", required: true, valueHint: "NAME", description: "Exchanger name" }, ...readArgs },
  examples: ["madmail exchanger status hub", "madmail exchanger status hub --json | jq .held"],
  run: ({ args }) => {
    const name = checkName(args.name);
    return existingDb(args, async ({ db }) => {
      const e = await findExchanger(db, name);
      if (!e) throw notFound(`no exchanger named "${name}"; see \`madmail exchanger list\``);
      const held = await heldFor(db, name);
      const now = Date.now();
      const view = {
        name: e.name, mode: e.mode, enabled: e.enabled === 1, stale: isStale(e, now),
        held: held.held, oldest_held_at: isoTime(held.oldestQueuedAt),
        oldest_held_age_s: held.oldestQueuedAt === null ? null : Math.round((now - held.oldestQueuedAt) / 1000),
        last_pull_at: isoTime(e.last_pull_at), last_poll_at: isoTime(e.last_poll_at), last_error: e.last_error,
        poll_interval: e.poll_interval, has_token: e.token_hash !== null, has_remote_token: e.remote_token !== null,
      };
      if (args.json) return printJson(view);
      const lines = [
        `Exchanger:  ${e.name} (${e.mode}, ${e.enabled ? "enabled" : "disabled"})${view.stale ? "  STALE: no pull or poll for over 3 intervals" : ""}`,
        `Held:       ${view.held}${view.oldest_held_age_s === null ? "" : ` (oldest ${formatDuration(view.oldest_held_age_s)} old)`}`,
        `Last pull:  ${tableTime(e.last_pull_at)}  (it pulled from us)`,
        `Last poll:  ${tableTime(e.last_poll_at)}  (we pulled from it)`,
        `Last error: ${e.last_error ?? "-"}`,
      ];
      say(args, lines.join("\n"));
    });
  },
});
