// A real state file in a temp dir for the tests of one file: opened (with openDb, migrations
// and pragmas as the binary has them) before each test or once for the file, closed and
// removed after.
import { afterAll, afterEach, beforeAll, beforeEach } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDb, type OpenedDb } from "../../src/db/open.ts";

/** Call at the top level of a test file; `state` is the open file while a test runs. */
export function useStateFile(name: string, scope: "each test" | "file" = "each test"): { readonly state: OpenedDb } {
  let dir = "";
  let state: OpenedDb | undefined;
  const [before, after] = scope === "file" ? [beforeAll, afterAll] : [beforeEach, afterEach];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `madmail-${name}-`));
    state = await openDb(join(dir, "madmail.db"));
  });
  after(async () => {
    await state?.close();
    state = undefined;
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get state() {
      if (!state) throw new Error("useStateFile: the state file is open only while a test runs");
      return state;
    },
  };
}
