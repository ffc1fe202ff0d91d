// The write batcher with the WAL synced apart (what serve runs): a durable write is answered
// only after a sync that began after its COMMIT; bookkeeping does not wait for the disk; a
// failed sync fails the durable writes it was to cover.
import { describe, expect, test } from "bun:test";
import { createWriteBatcher, type WriteOp } from "../../src/db/write-batcher.ts";
import { fakeFsync, fdsOpenOn, watch } from "../helpers/by-hand.ts";
import { useStateFile } from "../helpers/state-file.ts";

const file = useStateFile("batcher");

const setDomain = (name: string): WriteOp => async (trx) => {
  await trx.insertInto("domains").values({ name, created_at: Date.now() } as never).execute();
};
const domains = async () => (await file.state.db.selectFrom("domains").select("name").orderBy("name").execute()).map((r) => r.name);
const turn = () => new Promise((r) => setTimeout(r, 5));
describe("write batcher, WAL synced apart", () => {
  test("a durable write is answered after the sync, bookkeeping at once; both committed before", async () => {
    const { calls, fsync: syncWal } = fakeFsync();
    const writes = createWriteBatcher(file.state.db, { syncWal });
    const durable = watch(writes.run(setDomain("a.test")));
    const bookkeeping = watch(writes.run(setDomain("b.test"), { durable: false }));
    await turn();
    expect(await domains()).toEqual(["a.test", "b.test"]); // one COMMIT, no waiting for the disk
    expect(bookkeeping.settled).toBe(true);
    expect(durable.settled).toBe(false);
    expect(calls).toHaveLength(1);
    calls[0]!.done();
    await turn();
    expect(durable).toMatchObject({ settled: true, error: undefined });
  });

  test("the next batch commits while the disk works, and waits for a sync of its own", async () => {
    const { calls, fsync: syncWal } = fakeFsync();
    const writes = createWriteBatcher(file.state.db, { syncWal });
    const first = watch(writes.run(setDomain("a.test")));
    await turn();
    const second = watch(writes.run(setDomain("b.test")));
    await turn();
    expect(await domains()).toEqual(["a.test", "b.test"]);
    expect(calls).toHaveLength(2);
    calls[0]!.done();
    await turn();
    expect(first.settled).toBe(true);
    expect(second.settled).toBe(false);
    const drained = watch(writes.drain());
    await turn();
    expect(drained.settled).toBe(false); // drain waits for the sync too
    calls[1]!.done();
    await turn();
    expect(second.settled).toBe(true);
    expect(drained.settled).toBe(true);
  });

  test("a failed sync fails the durable writes it covers, not the bookkeeping", async () => {
    const { calls, fsync: syncWal } = fakeFsync();
    const writes = createWriteBatcher(file.state.db, { syncWal });
    const durable = watch(writes.run(setDomain("a.test")));
    const bookkeeping = watch(writes.run(setDomain("b.test"), { durable: false }));
    await turn();
    calls[0]!.fail(new Error("EIO: i/o error, fdatasync"));
    await turn();
    expect(bookkeeping).toMatchObject({ settled: true, error: undefined });
    expect(durable.settled).toBe(true);
    expect((durable.error as Error).message).toContain("EIO");
  });

  test("a bad write fails alone; its neighbours are committed and synced", async () => {
    const { calls, fsync: syncWal } = fakeFsync();
    const writes = createWriteBatcher(file.state.db, { syncWal });
    const good = watch(writes.run(setDomain("a.test")));
    const bad = watch(writes.run(async (trx) => void (await trx.insertInto("no_such_table" as never).values({} as never).execute())));
    await turn();
    expect(bad.settled).toBe(true);
    expect(bad.error).toBeTruthy();
    expect(await domains()).toEqual(["a.test"]);
    for (const c of calls) c.done();
    await turn();
    expect(good).toMatchObject({ settled: true, error: undefined });
  });

  test("the state file's own syncWal (a real fdatasync of the WAL): one for the writes of one turn", async () => {
    let syncs = 0;
    const writes = createWriteBatcher(file.state.db, { syncWal: () => (syncs++, file.state.syncWal()) });
    await Promise.all(["a.test", "b.test", "c.test"].map((d) => writes.run(setDomain(d))));
    expect(await domains()).toEqual(["a.test", "b.test", "c.test"]);
    expect(syncs).toBe(1);
    // The descriptor it syncs through is the WAL's.
    expect(fdsOpenOn(`${file.state.path}-wal`)).toBeGreaterThanOrEqual(2); // SQLite's and the kept one
  });
});
