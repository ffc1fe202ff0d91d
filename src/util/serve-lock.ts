// One `madmail serve` per state file. Two would share the queue: at start a server takes back
// every delivery left "delivering" (its predecessor died, it assumes), so a second one would send
// again what the first has in flight. Like Postfix's master.lock, serve holds an exclusive
// flock(2) on `<state file>-serve.lock` while it runs; the kernel drops it when the process ends,
// however it ends, so there is no stale lock to clean up after a crash or a reboot. The file
// holds the pid of the server that has it, for the error message. CLI commands take no lock.
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { MadmailError } from "../errors.ts";
import { log } from "../log.ts";
import { processAlive } from "./process-alive.ts";

export interface ServeLock {
  release(): void;
}

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/** Takes the lock, or throws MadmailError("conflict") naming the server that holds it. */
export function lockStateFile(dbPath: string): ServeLock {
  const path = `${dbPath}-serve.lock`;
  const libc = loadLibc();
  if (!libc) {
    log.warn(`cannot lock ${path} on this system (no flock): make sure only one madmail serve uses ${dbPath}`);
    return { release() {} };
  }
  let fd: number;
  try {
    fd = openSync(path, "a+", 0o644);
  } catch (err) {
    throw new MadmailError("config", `cannot open lock file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (libc.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    const errno = libc.errno();
    closeSync(fd);
    const pid = Number(/^\s*(\d+)/.exec(safeRead(path))?.[1] ?? 0);
    // errno is read after the call returned to JavaScript; the holder's pid backs it up.
    if (errno !== EWOULDBLOCK && !(pid && processAlive(pid))) throw new MadmailError("config", `cannot lock ${path}: flock failed (errno ${errno})`);
    throw new MadmailError("conflict", `another madmail serve${pid ? ` (pid ${pid})` : ""} is running on ${dbPath}; ` +
      `one server per state file (its lock: ${path})`);
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      // Closing the descriptor drops the lock. The file stays: removing it could let a third
      // server lock a new file while a second still waits on the old one.
      closeSync(fd);
    },
  };
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

interface Libc {
  flock(fd: number, op: number): number;
  errno(): number;
}

let libc: Libc | null | undefined;

function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== "linux") return libc;
  try {
    const { dlopen, FFIType: T, read } = require("bun:ffi") as typeof import("bun:ffi");
    const lib = dlopen("libc.so.6", {
      flock: { args: [T.i32, T.i32], returns: T.i32 },
      __errno_location: { args: [], returns: T.ptr },
    });
    libc = {
      flock: (fd, op) => lib.symbols.flock(fd, op),
      errno: () => {
        const p = lib.symbols.__errno_location();
        return p ? read.i32(p, 0) : -1;
      },
    };
  } catch {
    // Not glibc: no lock (logged by the caller).
  }
  return libc;
}
