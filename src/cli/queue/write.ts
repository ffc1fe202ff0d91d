// The commands that change the queue. Each runs in one write transaction (BEGIN IMMEDIATE):
// the state read for a check is the state written over, and the worker cannot claim the row
// in between. A row under a live lease is never changed: its worker is about to record the
// outcome, and changing it under the worker would lose that outcome or deliver twice.
import type { CommandDef } from "citty";
import { command } from "../_command.ts";
import { commonArgs, jsonArgs } from "../_args.ts";
import { existingDb } from "../_db.ts";
import { printJson, say } from "../_output.ts";
import { checkDomainArg } from "../domain.ts";
import { busyError, checkId, describeState, idArg, plural, resolveEntry } from "./_format.ts";
import {
  countDeliveriesOf, deleteDelivery, flushDeferred, holdDelivery, isLeaseLapsed, releaseDelivery, retryDeliveries,
} from "../../queue/queue-admin.repository.ts";
import { withWriteTransaction, type Db } from "../../db/open.ts";
import { loadConfig } from "../../db/settings.ts";
import { conflict, usageError } from "../../errors.ts";
import { tableTime } from "../../util/time.ts";

const retry = command({
  meta: { name: "retry", description: "Requeue deferred and dead entries for delivery now (dead ones get a new lifetime)" },
  args: {
    id: { ...idArg.id, required: false },
    all: { type: "boolean", description: "Every deferred and dead entry" },
    domain: { type: "string", valueHint: "DOMAIN", description: "Every deferred and dead entry for this destination domain" },
    ...jsonArgs,
    ...commonArgs,
  },
  examples: ["madmail queue retry 0jm3k2x9c4r7hq2d", "madmail queue retry --domain b.example", "madmail queue retry --all --json"],
  run: ({ args }) => {
    const given = [args.id !== undefined, !!args.all, args.domain !== undefined].filter(Boolean).length;
    if (given !== 1) throw usageError("give exactly one of ID, --all or --domain DOMAIN");
    const input = args.id === undefined ? undefined : checkId(args.id);
    const domain = args.domain === undefined ? undefined : checkDomainArg(args.domain);
    return existingDb(args, async ({ db }) => {
      const lifetimeMs = await queueLifetimeMs(db);
      const ids = await withWriteTransaction(db, async (trx) => {
        const now = Date.now();
        if (input === undefined) return retryDeliveries(trx, { domain }, now, lifetimeMs);
        const row = await resolveEntry(trx, input);
        if (row.state !== "deferred" && row.state !== "dead") {
          throw conflict(`queue entry ${row.id} is ${describeState(row, now)}; only deferred and dead entries can be retried`);
        }
        return retryDeliveries(trx, { id: row.id }, now, lifetimeMs);
      });
      if (args.json) return printJson({ requeued: ids.length, ids });
      say(args, `Requeued ${plural(ids.length, "queue entry", "queue entries")}${input === undefined ? "" : `: ${ids[0]}`}.`);
    });
  },
});

const hold = command({
  meta: { name: "hold", description: "Keep a queued or deferred entry from delivery until it is released" },
  args: { ...idArg, ...commonArgs },
  examples: ["madmail queue hold 0jm3k2x9c4r7hq2d"],
  run: ({ args }) => {
    const input = checkId(args.id);
    return existingDb(args, async ({ db }) => {
      const was = await withWriteTransaction(db, async (trx) => {
        const now = Date.now();
        const row = await resolveEntry(trx, input);
        if (row.state === "delivering" && !isLeaseLapsed(row, now)) throw busyError(row, "hold");
        if (!(await holdDelivery(trx, row.id, now))) {
          throw conflict(`queue entry ${row.id} is ${describeState(row, now)}; only queued and deferred entries can be held`);
        }
        return row;
      });
      say(args, `Held: ${was.id} (was ${was.state}); release it with \`madmail queue release ${was.id}\``);
    });
  },
});

const release = command({
  meta: { name: "release", description: "Release a held entry: it is queued and due now" },
  args: { ...idArg, ...commonArgs },
  examples: ["madmail queue release 0jm3k2x9c4r7hq2d"],
  run: ({ args }) => {
    const input = checkId(args.id);
    return existingDb(args, async ({ db }) => {
      const { row, now } = await withWriteTransaction(db, async (trx) => {
        const now = Date.now();
        const row = await resolveEntry(trx, input);
        if (!(await releaseDelivery(trx, row.id, now))) throw conflict(`queue entry ${row.id} is ${describeState(row, now)}, not held`);
        return { row, now };
      });
      // Holding does not stop the clock (as in Postfix): past its lifetime, one failure is final.
      const expired = row.expires_at <= now ? `; its lifetime ended ${tableTime(row.expires_at)}, so if this attempt fails it is given up` : "";
      say(args, `Released: ${row.id} (queued, due now${expired})`);
    });
  },
});

const remove = command({
  meta: { name: "delete", description: "Delete an entry and its attempts for good; its message goes when no other entry needs it" },
  args: { ...idArg, ...commonArgs },
  examples: ["madmail queue delete 0jm3k2x9c4r7hq2d"],
  run: ({ args }) => {
    const input = checkId(args.id);
    return existingDb(args, async ({ db }) => {
      const done = await withWriteTransaction(db, async (trx) => {
        const now = Date.now();
        const row = await resolveEntry(trx, input);
        if (row.state === "delivering" && !isLeaseLapsed(row, now)) throw busyError(row, "delete");
        const deleted = await deleteDelivery(trx, row, now);
        if (!deleted) throw busyError(row, "delete");
        return { row, ...deleted, others: deleted.messageDeleted ? 0 : await countDeliveriesOf(trx, row.message_id) };
      });
      const { row } = done;
      say(args, `Deleted: ${row.id} (${row.state}, to ${row.rcpt_domain}); ` +
        (done.messageDeleted ? `message ${row.message_id} deleted too` : `message ${row.message_id} kept for ${plural(done.others, "other entry", "other entries")}`));
    });
  },
});

const flush = command({
  meta: { name: "flush", description: "Make every deferred entry due now (like postqueue -f)" },
  args: { ...jsonArgs, ...commonArgs },
  examples: ["madmail queue flush", "madmail queue flush --json | jq .flushed"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const ids = await withWriteTransaction(db, (trx) => flushDeferred(trx, Date.now()));
      if (args.json) return printJson({ flushed: ids.length, ids });
      say(args, `Made ${plural(ids.length, "deferred queue entry", "deferred queue entries")} due now.`);
    }),
});

/** A retried dead entry gets the lifetime a new message gets (setting queue.lifetime, in seconds). */
async function queueLifetimeMs(db: Db): Promise<number> {
  return (await loadConfig(db))["queue.lifetime"] * 1000;
}

export default { retry, hold, release, delete: remove, flush } as Record<string, CommandDef<any>>;
