// The sending server's state-file work per relayed message, alone (not a test: bun test
// ignores *.bench.ts). No sockets and no peer: it isolates what the relay bench cannot resolve
// in its noise, the CPU the queue's SQL costs per message.
//
//   ./node_modules/.bin/bun test/bench/statefile.bench.ts [--messages 5000] [--size 1024]
//
// Per message, with the real repository functions on a real state file (WAL, synchronous FULL
// for the enqueue, NORMAL for bookkeeping, as serve runs it): enqueue (durable, group commit),
// claim, read the body back, settle as delivered with its attempt record. B messages arrive per
// event-loop turn (B = 1, 4, 16: how many sessions finish DATA in the same turn). Two ways:
//   own txn  the claim pass in a transaction of its own (madmail before ee38e32)
//   joined   the claim pass through the write batcher, in one transaction with the outcomes and
//            new mail of the same turn (madmail before the WAL sync moved off the event loop)
//   joined, WAL synced apart
//            the same, every COMMIT with synchronous=NORMAL and the enqueue made durable by an
//            fdatasync of the WAL on the thread pool (what serve does now; CPU of all threads)
// Prints CPU ms per message (user + system of this process) and COMMITs per message.
import { rmSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { openDb, withWriteTransaction, type OpenedDb } from "../../src/db/open.ts";
import { createWriteBatcher } from "../../src/db/write-batcher.ts";
import { claimDue, enqueueMessage, loadMessage, nextDueAt, recordAttempts, settleDelivery, type Claimed } from "../../src/queue/queue.repository.ts";
import { dieWith, requirePositiveIntegers } from "./_lib.ts";

const { values } = parseArgs({ options: { messages: { type: "string", default: "5000" }, size: { type: "string", default: "1024" } } });
const N = Number(values.messages);
const SIZE = Number(values.size);
requirePositiveIntegers({ messages: N, size: SIZE }, dieWith("statefile.bench"));

type Way = "own txn" | "joined" | "joined, WAL synced apart";

async function run(state: OpenedDb, perTurn: number, way: Way): Promise<{ cpuMs: number; commits: number }> {
  const joined = way !== "own txn";
  const writes = createWriteBatcher(state.db, way === "joined, WAL synced apart" ? { syncWal: state.syncWal } : {});
  const body = new Uint8Array(SIZE).fill(0x41);
  let commits = 0;
  const c0 = process.cpuUsage();
  let previous: Claimed[] = [];
  for (let sent = 0; sent < N || previous.length; ) {
    const ops: Promise<unknown>[] = [];
    for (let k = 0; k < perTurn && sent < N; k++, sent++) {
      ops.push(writes.run(async (trx) => void (await enqueueMessage(trx, {
        mailFrom: "alice@a.test", body, door: "submission", authUser: "alice@a.test", byDomain: new Map([["b.test", ["bob@b.test"]]]),
      }, 86_400_000))));
    }
    for (const c of previous) {
      ops.push(writes.run(async (trx) => {
        if (await settleDelivery(trx, c, { state: "delivered", route: "http:127.0.0.1" })) {
          await recordAttempts(trx, [{ deliveryId: c.delivery.id, transport: "http", endpoint: "http:127.0.0.1", outcome: "delivered", detail: "200", ms: 2 }]);
        }
      }, { durable: false }));
    }
    let claimed: Claimed[] = [];
    const claim = (trx: Parameters<typeof claimDue>[0]) => claimDue(trx, 64, { leaseMs: 60_000, inFlight: new Map(), perDomain: 64, expired: true }).then((c) => void (claimed = c));
    if (joined) {
      ops.push(writes.run(claim, { durable: false }));
      await Promise.all(ops);
      commits += 1;
    } else {
      await Promise.all(ops);
      await withWriteTransaction(state.db, claim, { durable: false });
      commits += 2;
    }
    await nextDueAt(state.db);
    for (const c of claimed) await loadMessage(state.db, c.delivery.message_id);
    previous = claimed;
  }
  await writes.drain();
  const c = process.cpuUsage(c0);
  return { cpuMs: (c.user + c.system) / 1000 / N, commits: commits / N };
}

const rows: string[] = [];
for (const perTurn of [1, 4, 16]) {
  for (const way of ["own txn", "joined", "joined, WAL synced apart"] as const) {
    const dir = mkdtempSync(join(tmpdir(), "madmail-statefile-"));
    const state = await openDb(join(dir, "madmail.db"));
    try {
      await run(state, perTurn, way); // warm-up: JIT and the first pages
      const r = await run(state, perTurn, way);
      rows.push(`| ${perTurn} | ${way} | ${r.cpuMs.toFixed(3)} | ${r.commits.toFixed(2)} |`);
      console.log(rows.at(-1));
    } finally {
      await state.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
console.log(`\nCommand: \`./node_modules/.bin/bun test/bench/statefile.bench.ts ${process.argv.slice(2).join(" ")}\` (${N} messages of ${SIZE} bytes, ${new Date().toISOString()})\n`);
console.log("| messages per turn | claim pass | CPU ms per message | COMMITs per message |\n| ---: | --- | ---: | ---: |\n" + rows.join("\n"));
