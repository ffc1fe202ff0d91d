import { command } from "./_command.ts";
import { commonArgs } from "./_args.ts";
import { existingDb, withDb } from "./_db.ts";
import { say } from "./_output.ts";
import { withWriteTransaction } from "../db/open.ts";
import { adminTokenCreatedAt, rotateAdminToken } from "../admin/admin-token.ts";
import { notFound } from "../errors.ts";
import { tableTime } from "../util/time.ts";

export default command({
  meta: { name: "admin-token", description: "Show when the admin API token was made, or replace it (--rotate prints the new one once)" },
  args: { rotate: { type: "boolean", description: "Make a new token, print it once; the old one stops working" }, ...commonArgs },
  examples: ["madmail admin-token", "madmail admin-token --rotate > admin.token"],
  // Only --rotate writes: a look at a mistyped path must not leave a new, empty state file.
  run: ({ args }) =>
    (args.rotate ? withDb : existingDb)(args, async ({ db }) => {
      if (args.rotate) {
        const token = await withWriteTransaction(db, (trx) => rotateAdminToken(trx));
        process.stdout.write(token + "\n");
        if (!args.quiet) process.stderr.write("Admin token replaced and stored as a hash: it cannot be shown again.\n");
        return;
      }
      const at = await adminTokenCreatedAt(db);
      if (at === null) throw notFound("no admin token yet; run `madmail init` or `madmail admin-token --rotate`");
      say(args, `Admin token set at ${tableTime(at)} UTC (only its hash is stored). Use --rotate to replace it.`);
    }),
});
