// claimDue against a real state file: oldest first, never more than per_destination rows of one
// domain in flight (counting what the worker holds already), and rows of other domains found
// behind a run of rows of a domain at its cap.
import { expect, test } from "bun:test";
import { withWriteTransaction } from "../../src/db/open.ts";
import { claimDue, enqueueMessage } from "../../src/queue/queue.repository.ts";
import { useStateFile } from "../helpers/state-file.ts";

const file = useStateFile("claim");

/** One message per domain in order, each queued 1 ms after the one before. */
async function queue(domains: string[]): Promise<void> {
  await withWriteTransaction(file.state.db, async (trx) => {
    for (const [i, d] of domains.entries()) {
      await enqueueMessage(trx, { mailFrom: "alice@a.test", body: new Uint8Array([65]), door: "submission", authUser: null, byDomain: new Map([[d, [`x@${d}`]]]) }, 60_000, 1000 + i);
    }
  });
}

const claim = (limit: number, inFlight: Record<string, number>, perDomain: number) =>
  withWriteTransaction(file.state.db, (trx) => claimDue(trx, limit, { leaseMs: 60_000, inFlight: new Map(Object.entries(inFlight)), perDomain, expired: false }, 5000));

test("oldest first, up to the limit, each claimed row leased", async () => {
  await queue(["b.test", "c.test", "b.test", "c.test"]);
  const got = await claim(3, {}, 10);
  expect(got.map((c) => [c.delivery.rcpt_domain, c.delivery.next_attempt_at])).toEqual([["b.test", 1000], ["c.test", 1001], ["b.test", 1002]]);
  for (const c of got) expect(c.delivery).toMatchObject({ state: "delivering", lease_until: 65_000 });
  const states = await file.state.db.selectFrom("deliveries").select("state").orderBy("next_attempt_at").execute();
  expect(states.map((r) => r.state)).toEqual(["delivering", "delivering", "delivering", "queued"]);
});

test("a domain at its cap is passed over, and rows of others behind its run are found", async () => {
  await queue([...Array(10).fill("b.test"), "c.test", "c.test"]);
  // b.test holds 3 of its 4: one more b.test, then the two c.test rows behind the other nine.
  const got = await claim(4, { "b.test": 3 }, 4);
  expect(got.map((c) => c.delivery.rcpt_domain)).toEqual(["b.test", "c.test", "c.test"]);
  // At its cap already: none of its rows.
  expect((await claim(4, { "b.test": 4, "c.test": 2 }, 4)).length).toBe(0);
});

test("with room below every cap, exactly the oldest rows up to the limit", async () => {
  await queue(Array(8).fill("b.test"));
  const got = await claim(4, { "b.test": 2 }, 32);
  expect(got.map((c) => c.delivery.next_attempt_at)).toEqual([1000, 1001, 1002, 1003]);
  expect((await claim(8, {}, 5)).length).toBe(4); // 4 left, cap 5 counts only this pass here
});

test("capped: set when a domain at its cap may have left due rows unclaimed, so the worker knows to look again", async () => {
  await queue([...Array(4).fill("b.test"), "c.test"]);
  const pass = async (limit: number, inFlight: Record<string, number>, perDomain: number) => {
    const counts = { capped: false };
    const got = await withWriteTransaction(file.state.db, (trx) =>
      claimDue(trx, limit, { leaseMs: 60_000, inFlight: new Map(Object.entries(inFlight)), perDomain, expired: false, counts }, 5000));
    return { domains: got.map((c) => c.delivery.rcpt_domain), capped: counts.capped };
  };
  // b.test at its cap before the pass: its rows are not read at all.
  expect(await pass(8, { "b.test": 2 }, 2)).toEqual({ domains: ["c.test"], capped: true });
  // b.test reaches its cap within the pass: rows read and passed over.
  expect(await pass(8, {}, 2)).toEqual({ domains: ["b.test", "b.test"], capped: true });
  // Nothing held back: the two b.test rows left, under the cap.
  expect(await pass(8, {}, 4)).toEqual({ domains: ["b.test", "b.test"], capped: false });
});

test("a row whose lease ran out is taken back, unless this worker is still delivering it", async () => {
  await queue(["b.test", "c.test"]);
  // Claimed at t=5000 with a 60 s lease; at t=70,000 both leases have run out.
  const first = await claim(2, {}, 10);
  const [slow, dead] = first.map((c) => c.delivery.id);
  const again = await withWriteTransaction(file.state.db, (trx) =>
    claimDue(trx, 10, { leaseMs: 60_000, holding: new Set([slow!]), inFlight: new Map(), perDomain: 10, expired: true }, 70_000));
  expect(again.map((c) => c.delivery.id)).toEqual([dead!]);
});
