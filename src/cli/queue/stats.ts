import { command } from "../_command.ts";
import { readArgs } from "../_args.ts";
import { existingDb } from "../_db.ts";
import { printJson, printTable } from "../_output.ts";
import { plural } from "./_format.ts";
import { AGE_BUCKET_MINUTES, DELIVERY_STATES, queueStats, type DomainShape } from "../../queue/queue-admin.repository.ts";

/** Domains in the table; the rest are summed on one line (--json lists every domain). */
const TOP = 20;
const BUCKETS = [...AGE_BUCKET_MINUTES.map((m, i) => `${i ? AGE_BUCKET_MINUTES[i - 1] : 0}-${m}m`), `${AGE_BUCKET_MINUTES.at(-1)}m+`];

export default command({
  meta: { name: "stats", description: "Count entries per state, and pending ones per destination domain and age (like qshape)" },
  args: readArgs,
  examples: ["madmail queue stats", "madmail queue stats --json | jq '.domains[:5]'"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const { states, domains } = await queueStats(db, Date.now());
      const total = sumShapes("TOTAL", domains);
      if (args.json) {
        return printJson({
          states,
          pending: total.total,
          age_buckets: BUCKETS,
          total: { total: total.total, buckets: total.buckets },
          domains,
        });
      }
      printTable(["STATE", "COUNT"], DELIVERY_STATES.map((s) => [s, String(states[s])]));
      process.stdout.write("\n");
      const rest = domains.slice(TOP);
      const lines = [total, ...domains.slice(0, TOP), ...(rest.length ? [sumShapes(`(${plural(rest.length, "other domain", "other domains")})`, rest)] : [])];
      printTable(
        ["DOMAIN", "TOTAL", ...BUCKETS],
        lines.map((d) => [d.domain, String(d.total), ...d.buckets.map(String)]),
      );
    }),
});

function sumShapes(label: string, shapes: DomainShape[]): DomainShape {
  return {
    domain: label,
    total: shapes.reduce((a, d) => a + d.total, 0),
    buckets: BUCKETS.map((_, i) => shapes.reduce((a, d) => a + d.buckets[i]!, 0)),
  };
}
