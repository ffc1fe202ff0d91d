import { command } from "./_command.ts";
import { commonArgs } from "./_args.ts";
import { withDb } from "./_db.ts";
import { say } from "./_output.ts";
import { checkDomainArg } from "./domain.ts";
import { withWriteTransaction } from "../db/open.ts";
import { addDomain } from "../policy/local-domains.ts";
import { createAdminTokenIfMissing } from "../admin/admin-token.ts";

export default command({
  meta: { name: "init", description: "Create the state file with a first local domain and print the admin token once" },
  details: ["Safe to run again: what exists is kept. A domain already present is reported, and an admin token already set is " +
    "not replaced (rotate it with `madmail admin-token --rotate`)."],
  args: { domain: { type: "string", valueHint: "DOMAIN", description: "First local domain (e.g. chat.example.org)" }, ...commonArgs },
  examples: ["madmail init --domain chat.example.org", "madmail --db /var/lib/madmail/madmail.db init"],
  run: ({ args }) => {
    const domain = args.domain === undefined ? undefined : checkDomainArg(args.domain);
    return withDb(args, async ({ db, path }) => {
      const { token, added } = await withWriteTransaction(db, async (trx) => ({
        added: domain ? await addDomain(trx, domain) : false,
        token: await createAdminTokenIfMissing(trx),
      }));
      say(args, `State file: ${path}`);
      if (domain) say(args, added ? `Domain added: ${domain}` : `Domain already present: ${domain}`);
      if (token) {
        process.stdout.write(`Admin token (shown once, only its hash is stored): ${token}\n`);
      } else {
        say(args, "Admin token already set; nothing replaced (rotate with `madmail admin-token --rotate`).");
      }
    }, { create: true });
  },
});
