// An exclusive lock on a file, held with flock(2): the kernel drops it when the holder ends,
// however it ends (kill -9, OOM, reboot), so a lock is never stale, and a pid written in the file
// by a dead holder and reused by another process cannot keep the lock taken. The file holds
// the holder's pid only for messages.
import { closeSync, fstatSync, ftruncateSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { MadmailError } from "../errors.ts";
import { EWOULDBLOCK, LOCK_EX, LOCK_NB, loadLibc } from "./libc.ts";
import { processAlive } from "./process-alive.ts";

export interface HeldLock {
  release(): void;
}

/** Held by another process: its pid as written in the file (null when unknown). */
export interface BusyLock {
  heldBy: number | null;
}

export interface LockOptions {
  /**
   * Remove the file on release (pull-client: no file left between runs). A taker checks after
   * locking that the name still leads to the file it locked, so removal cannot let two in.
   */
  removeOnRelease?: boolean;
}

/**
 * Takes the lock without waiting. Returns null when this system has no flock (the caller warns
 * and goes on unlocked); throws MadmailError("config") when the file cannot be opened.
 */
export function tryLockFile(path: string, opts: LockOptions = {}): HeldLock | BusyLock | null {
  const libc = loadLibc();
  if (!libc) return null;
  for (;;) {
    let fd: number;
    try {
      fd = openSync(path, "a+", 0o644);
    } catch (err) {
      throw new MadmailError("config", `cannot open lock file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (libc.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      const errno = libc.errno();
      closeSync(fd);
      const pid = Number(/^\s*(\d+)/.exec(safeRead(path))?.[1] ?? 0) || null;
      // errno is read after the call has returned to JavaScript; a live holder backs it up.
      if (errno !== EWOULDBLOCK && !(pid && processAlive(pid))) throw new MadmailError("config", `cannot lock ${path}: flock failed (errno ${errno})`);
      return { heldBy: pid };
    }
    // The holder before us may have removed the name between our open and our lock: then we
    // hold a file nobody else will find. Start again on whatever the name leads to now.
    if (opts.removeOnRelease && !sameFile(fd, path)) {
      closeSync(fd);
      continue;
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
    let held = true;
    return {
      release() {
        if (!held) return;
        held = false;
        // Removed while still locked, so no one can lock this file after it has lost its name.
        if (opts.removeOnRelease) {
          try {
            unlinkSync(path);
          } catch {}
        }
        closeSync(fd);
      },
    };
  }
}

function sameFile(fd: number, path: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(path);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
