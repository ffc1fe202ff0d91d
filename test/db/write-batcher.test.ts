// The write batcher: group commit, one bad write not failing its neighbours, and durable
// writes that resolve only after the WAL is synced (off the event loop, after COMMIT).
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { openDb, type OpenedDb } from "../../src/db/open.ts";
import { createWriteBatcher } from "../../src/db/write-batcher.ts";

const ROOT = resolve(import.meta.dir, "../..");
let dir: string;
let state: OpenedDb | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "madmail-batcher-"));
});
afterEach(async () => {
  await state?.close();
  state = undefined;
  rmSync(dir, { recursive: true, force: true });
});

const insertId = (id: string) => async (trx: Parameters<Parameters<ReturnType<typeof createWriteBatcher>["run"]>[0]>[0]) => {
  await trx.insertInto("delivery_ids").values({ id, seen_at: 1, pending: 0 }).execute();
};

describe("write batcher", () => {
  for (const wal of [true, false]) {
    test(`${wal ? "WAL synced after COMMIT" : "synchronous=FULL"}: writes of one turn share a commit, a failing one fails alone, all are visible to another connection`, async () => {
      const path = join(dir, "madmail.db");
      state = await openDb(path);
      const writes = createWriteBatcher(state.db, wal ? { walPath: `${path}-wal` } : {});
      const results = await Promise.allSettled([
        writes.run(insertId("a")),
        writes.run(insertId("b"), { durable: false }),
        writes.run(insertId("a")), // duplicate key: this one fails
        writes.run(insertId("c")),
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
      await writes.drain();
      const other = await openDb(path);
      try {
        const ids = (await other.db.selectFrom("delivery_ids").select("id").orderBy("id").execute()).map((r) => r.id);
        expect(ids).toEqual(["a", "b", "c"]);
      } finally {
        await other.close();
      }
    });
  }

  test.if(Bun.which("strace") !== null)("every durable write resolves only after an fsync of the WAL that completed after it was submitted", async () => {
    const path = join(dir, "madmail.db");
    const script = join(dir, "writer.ts");
    const N = 40;
    // Markers are file opens, so they appear in the same strace stream as the syncs.
    writeFileSync(script, `
      import { openSync, closeSync } from "node:fs";
      import { openDb } from ${JSON.stringify(join(ROOT, "src/db/open.ts"))};
      import { createWriteBatcher } from ${JSON.stringify(join(ROOT, "src/db/write-batcher.ts"))};
      const mark = (name) => { try { closeSync(openSync(${JSON.stringify(dir)} + "/MARK-" + name, "r")); } catch {} };
      const state = await openDb(${JSON.stringify(path)});
      const writes = createWriteBatcher(state.db, { walPath: ${JSON.stringify(path)} + "-wal" });
      await Promise.all(Array.from({ length: ${N} }, async (_, i) => {
        // spread over several turns so that some batches overlap a running sync
        await new Promise((r) => setTimeout(r, i % 4));
        mark("BEGIN-" + i);
        await writes.run(async (trx) => { await trx.insertInto("delivery_ids").values({ id: "m" + i, seen_at: 1, pending: 0 }).execute(); });
        mark("RESOLVED-" + i);
      }));
      await state.close();
    `);
    const trace = join(dir, "strace.txt");
    const proc = Bun.spawn(["strace", "-f", "-y", "-qq", "-e", "trace=openat,fsync,fdatasync", "-o", trace, process.execPath, script], { stdout: "pipe", stderr: "pipe" });
    const code = await proc.exited;
    expect({ code, stderr: await new Response(proc.stderr).text() }).toEqual({ code: 0, stderr: "" });

    const lines = readFileSync(trace, "utf8").split("\n");
    const begin = new Map<number, number>();
    const resolved = new Map<number, number>();
    const syncDone: number[] = [];
    const syncing = new Set<string>(); // pids with a WAL sync under way
    lines.forEach((line, at) => {
      const m = /^(\d+)\s+(.*)$/.exec(line);
      if (!m) return;
      const [, pid, call] = m as unknown as [string, string, string];
      const mark = /MARK-(BEGIN|RESOLVED)-(\d+)/.exec(call);
      if (mark) (mark[1] === "BEGIN" ? begin : resolved).set(Number(mark[2]), at);
      if (/^f(data)?sync\(\d+<[^>]*-wal>/.test(call)) {
        if (call.endsWith("<unfinished ...>")) syncing.add(pid);
        else if (/= 0$/.test(call)) syncDone.push(at);
      } else if (/^<\.\.\. f(data)?sync resumed>/.test(call) && syncing.delete(pid) && /= 0$/.test(call)) {
        syncDone.push(at);
      }
    });
    expect(begin.size).toBe(N);
    expect(resolved.size).toBe(N);
    for (let i = 0; i < N; i++) {
      const covered = syncDone.some((s) => s > begin.get(i)! && s < resolved.get(i)!);
      if (!covered) throw new Error(`write ${i} resolved without a WAL sync after it was submitted`);
    }
    // Group commit: fewer syncs than writes.
    const during = syncDone.filter((s) => s > Math.min(...begin.values()));
    expect(during.length).toBeGreaterThan(0);
    expect(during.length).toBeLessThan(N);
  });
});
