// Quota usage recounted from the Maildirs (at start and every 10 minutes in serve): sizes from
// ",S=" in file names, else from stat; a delivery recorded while the files are being counted
// is not overwritten by the count.
import { expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { addUsedBytes, findUser, insertUser } from "../../src/store/users.repository.ts";
import { recountUsage, recountUser } from "../../src/store/usage.ts";
import { useStateFile } from "../helpers/state-file.ts";

const file = useStateFile("usage");
const mailRoot = () => join(file.state.dataDir, "mail");

function put(path: string, bytes: number): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, "x".repeat(bytes));
}

test("used_bytes becomes what new/ and cur/ hold: the ,S= size where the name has one, else the file's size; tmp/ does not count", async () => {
  const db = file.state.db;
  await insertUser(db, "bob@b.test", null, null);
  await insertUser(db, "carol@b.test", null, null);
  await addUsedBytes(db, "carol@b.test", 5);
  const bob = join(mailRoot(), "bob@b.test");
  put(join(bob, "new", "1.host,S=1000"), 10); // the name's size wins
  put(join(bob, "cur", "2.host,S=300:2,S"), 300);
  put(join(bob, "cur", "3.host:2,"), 42); // no ,S=: stat
  put(join(bob, "tmp", "4.host"), 999);
  put(join(mailRoot(), "carol@b.test", "new", "5.host,S=5"), 5);
  expect(await recountUsage(db, mailRoot())).toBe(1); // carol's 5 was right already
  expect((await findUser(db, "bob@b.test"))?.used_bytes).toBe(1342);
  expect((await findUser(db, "carol@b.test"))?.used_bytes).toBe(5);
});

test("Maildir++ folders (.Archive, .Trash) count too: mail moved out of the INBOX over IMAP still takes room", async () => {
  const db = file.state.db;
  await insertUser(db, "bob@b.test", null, null);
  const bob = join(mailRoot(), "bob@b.test");
  put(join(bob, "cur", "1.host,S=100:2,S"), 100);
  put(join(bob, ".Archive", "cur", "2.host,S=200,W=210:2,S"), 200);
  put(join(bob, ".Trash", "new", "3.host"), 30);
  put(join(bob, ".Archive", "tmp", "4.host"), 999);
  writeFileSync(join(bob, ".Archive", "maildirfolder"), "");
  expect(await recountUsage(db, mailRoot())).toBe(1);
  expect((await findUser(db, "bob@b.test"))?.used_bytes).toBe(330);
});

test("a delivery recorded between reading the row and storing the count keeps its bytes", async () => {
  const db = file.state.db;
  await insertUser(db, "bob@b.test", null, null);
  put(join(mailRoot(), "bob@b.test", "new", "1.host,S=700"), 700);
  const seen = (await findUser(db, "bob@b.test"))!; // used_bytes 0, read before counting
  await addUsedBytes(db, "bob@b.test", 300); // a delivery lands meanwhile
  expect(await recountUser(db, mailRoot(), seen)).toBe(false);
  expect((await findUser(db, "bob@b.test"))?.used_bytes).toBe(300);
  // The next recount, from a fresh read, stores the files' total.
  expect(await recountUsage(db, mailRoot())).toBe(1);
  expect((await findUser(db, "bob@b.test"))?.used_bytes).toBe(700);
});
