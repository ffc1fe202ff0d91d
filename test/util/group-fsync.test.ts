// Group commit of directory fsyncs: a caller is resolved only by an fsync that STARTED after
// its call (i.e. after its rename), and concurrent callers share fsyncs.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGroupFsync, fsyncDirectory, keptOpenFile } from "../../src/util/group-fsync.ts";
import { fakeFsync, fdsOpenOn, watch } from "../helpers/by-hand.ts";

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("createGroupFsync", () => {
  test("the first caller starts an fsync at once and is resolved by it", async () => {
    const f = fakeFsync();
    const sync = createGroupFsync(f.fsync);
    const a = watch(sync("/d"));
    expect(f.calls).toHaveLength(1);
    f.calls[0]!.done();
    await tick();
    expect(a.settled).toBe(true);
  });

  test("a caller arriving during an fsync waits for the NEXT one, not the one in flight", async () => {
    const f = fakeFsync();
    const sync = createGroupFsync(f.fsync);
    const a = watch(sync("/d"));
    const b = watch(sync("/d")); // its rename may have happened after fsync #1 started
    expect(f.calls).toHaveLength(1); // #2 not started while #1 runs
    f.calls[0]!.done();
    await tick();
    expect(a.settled).toBe(true);
    expect(b.settled).toBe(false);
    expect(f.calls).toHaveLength(2); // #2 started after #1 ended, i.e. after b's call
    f.calls[1]!.done();
    await tick();
    expect(b.settled).toBe(true);
  });

  test("many callers during one fsync share a single next fsync", async () => {
    const f = fakeFsync();
    const sync = createGroupFsync(f.fsync);
    sync("/d");
    const waiting = Array.from({ length: 100 }, () => watch(sync("/d")));
    f.calls[0]!.done();
    await tick();
    expect(f.calls).toHaveLength(2);
    f.calls[1]!.done();
    await tick();
    expect(waiting.every((w) => w.settled && w.error === undefined)).toBe(true);
    expect(f.calls).toHaveLength(2); // 101 callers, 2 fsyncs
    // Idle again: the next caller starts a fresh fsync immediately.
    sync("/d");
    expect(f.calls).toHaveLength(3);
  });

  test("a failed fsync rejects its callers only; the next batch still gets its own fsync", async () => {
    const f = fakeFsync();
    const sync = createGroupFsync(f.fsync);
    const a = watch(sync("/d"));
    const b = watch(sync("/d"));
    f.calls[0]!.fail(new Error("EIO"));
    await tick();
    expect((a.error as Error).message).toBe("EIO");
    expect(b.settled).toBe(false);
    f.calls[1]!.done();
    await tick();
    expect(b.settled && b.error === undefined).toBe(true);
  });

  test("directories are independent", async () => {
    const f = fakeFsync();
    const sync = createGroupFsync(f.fsync);
    sync("/a");
    sync("/b");
    expect(f.calls.map((c) => c.dir)).toEqual(["/a", "/b"]);
  });

  test("fsyncDirectory syncs a real directory and refuses a missing one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "madmail-fsync-"));
    try {
      await fsyncDirectory(dir);
      await expect(fsyncDirectory(join(dir, "missing"))).rejects.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("keptOpenFile (the WAL's sync)", () => {
  test("a missing file: ENOENT, and the next sync opens it once it exists", async () => {
    const dir = mkdtempSync(join(tmpdir(), "madmail-kept-"));
    const path = join(dir, "x.db-wal");
    const f = keptOpenFile(path);
    try {
      await expect(f.sync()).rejects.toThrow(/ENOENT/);
      writeFileSync(path, "frames");
      await f.sync();
      expect(fdsOpenOn(path)).toBe(1);
    } finally {
      await f.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("one descriptor for every sync, closed by close()", async () => {
    const dir = mkdtempSync(join(tmpdir(), "madmail-kept-"));
    const path = join(dir, "x.db-wal");
    writeFileSync(path, "frames");
    const f = keptOpenFile(path);
    try {
      await Promise.all([f.sync(), f.sync(), f.sync()]);
      await f.sync();
      expect(fdsOpenOn(path)).toBe(1);
      await f.close();
      expect(fdsOpenOn(path)).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
