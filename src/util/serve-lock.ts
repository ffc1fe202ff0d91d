// One `madmail serve` per state file. Two would share the queue: at start a server takes back
// every delivery left "delivering" (its predecessor died, it assumes), so a second one would send
// again what the first has in flight. Like Postfix's master.lock, serve holds an exclusive
// flock(2) on `<state file>-serve.lock` while it runs (file-lock.ts). CLI commands take no lock.
import { realpathSync } from "node:fs";
import { MadmailError } from "../errors.ts";
import { log } from "../log.ts";
import { tryLockFile, type HeldLock } from "./file-lock.ts";

/** Takes the lock, or throws MadmailError("conflict") naming the server that holds it. */
export function lockStateFile(dbPath: string): HeldLock {
  // Next to the file itself: a second serve given a symlink to it must find the same lock.
  const path = `${realpathSync(dbPath)}-serve.lock`;
  // The file stays when serve stops: removing it is of no use to anyone.
  const lock = tryLockFile(path);
  if (!lock) {
    log.warn(`cannot lock ${path} on this system (no flock): make sure only one madmail serve uses ${dbPath}`);
    return { release() {} };
  }
  if ("heldBy" in lock) {
    throw new MadmailError("conflict", `another madmail serve${lock.heldBy ? ` (pid ${lock.heldBy})` : ""} is running on ${dbPath}; ` +
      `one server per state file (its lock: ${path})`);
  }
  return lock;
}
