// Variant: the claim pass joins the settles' group transaction (write batcher) instead of its own.
import { rmSync } from "node:fs";
import { sql } from "kysely";
import { openDb } from "./src/db/open.ts";
import { createWriteBatcher } from "./src/db/write-batcher.ts";
import { claimDue, enqueueMessage, loadMessage, nextDueAt, recordAttempts, settleDelivery, type Claimed } from "./src/queue/queue.repository.ts";
rmSync("/tmp/dbsim", { recursive: true, force: true });
const state = await openDb("/tmp/dbsim/madmail.db");
if (process.env.DROP) for (const ix of process.env.DROP.split(",")) await sql.raw(`DROP INDEX ${ix}`).execute(state.db);
if (process.env.CKPT) await sql.raw(`PRAGMA wal_autocheckpoint = ${process.env.CKPT}`).execute(state.db);
const writes = createWriteBatcher(state.db);
const body = new Uint8Array(Number(process.env.SIZE ?? 1024)).fill(65);
const N = 5000, BATCH = Number(process.env.BATCH ?? 4);
const joined = process.env.JOIN === "1";
const c0 = process.cpuUsage(); const t0 = performance.now();
let prev: Claimed[] = [];
for (let i = 0; i < N + BATCH; i += BATCH) {
  const ops: Promise<unknown>[] = [];
  if (i < N) for (let k = 0; k < BATCH; k++) ops.push(writes.run(async (trx) => void (await enqueueMessage(trx, { mailFrom: "a@a.test", body, door: "submission", authUser: "a@a.test", byDomain: new Map([["b.test", ["b@b.test"]]]) }, 86400_000))));
  if (!joined) await Promise.all(ops.splice(0));
  for (const c of prev) ops.push(writes.run(async (trx) => { if (await settleDelivery(trx, c, { state: "delivered", route: "http:x" })) await recordAttempts(trx, [{ deliveryId: c.delivery.id, transport: "http", endpoint: "x", outcome: "delivered", detail: "200", ms: 3 }]); }, { durable: false }));
  if (!joined) await Promise.all(ops.splice(0));
  let claimed: Claimed[] = [];
  ops.push(writes.run(async (trx) => void (claimed = await claimDue(trx, 32, 60_000, new Map(), 32)), { durable: false }));
  await Promise.all(ops);
  await nextDueAt(state.db);
  for (const c of claimed) await loadMessage(state.db, c.delivery.message_id);
  prev = claimed;
}
const c = process.cpuUsage(c0);
console.log(`join=${joined} batch=${BATCH} ckpt=${process.env.CKPT ?? "default"} size ${body.length}: ${((c.user + c.system) / N / 1000).toFixed(3)} ms CPU/msg, wall ${((performance.now() - t0) / N).toFixed(3)} ms/msg`);
await state.close();
