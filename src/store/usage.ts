// Quota usage from the Maildirs themselves. Deliveries add to users.used_bytes as they happen;
// mail deleted over IMAP (Dovecot) is only seen by counting, so the server recounts at start
// and every few minutes: the size is in each file name (",S=NNN"), or from stat.
import { promises as fsp } from "node:fs";
import { join } from "node:path";
import type { Db } from "../db/open.ts";
import type { UserRow } from "../db/schema.ts";
import { listUsers } from "./users.repository.ts";

/**
 * What a user's Maildir holds: INBOX's new/ and cur/, and those of every Maildir++ folder
 * (`.Archive/`, `.Trash/`, ...), as Dovecot's own Maildir++ quota counts: mail moved out of the
 * INBOX over IMAP still takes room.
 */
export async function maildirBytes(dir: string): Promise<number> {
  let total = await folderBytes(dir);
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (e.isDirectory() && e.name.startsWith(".") && e.name !== "." && e.name !== "..") total += await folderBytes(join(dir, e.name));
  }
  return total;
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const sub of ["new", "cur"]) {
    let names: string[];
    try {
      names = await fsp.readdir(join(dir, sub));
    } catch {
      continue;
    }
    for (const name of names) {
      const m = /,S=(\d+)/.exec(name);
      if (m) total += Number(m[1]);
      else total += await fsp.stat(join(dir, sub, name)).then((s) => s.size, () => 0);
    }
  }
  return total;
}

/** Sets every user's used_bytes to what their Maildir holds; returns how many changed. */
export async function recountUsage(db: Db, mailRoot: string): Promise<number> {
  let changed = 0;
  for (const u of await listUsers(db)) if (await recountUser(db, mailRoot, u)) changed++;
  return changed;
}

/**
 * One user's recount. `seen` is the row as read before counting: the total is stored only if
 * used_bytes still holds that value. A delivery recorded while the files were being counted may
 * or may not be among them; its bytes are kept, and the next recount settles the total.
 */
export async function recountUser(db: Db, mailRoot: string, seen: Pick<UserRow, "address" | "used_bytes">): Promise<boolean> {
  const bytes = await maildirBytes(join(mailRoot, seen.address));
  if (bytes === seen.used_bytes) return false;
  const r = await db.updateTable("users").set({ used_bytes: bytes })
    .where("address", "=", seen.address).where("used_bytes", "=", seen.used_bytes).executeTakeFirst();
  return r.numUpdatedRows > 0n;
}
