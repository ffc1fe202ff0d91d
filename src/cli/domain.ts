import { command } from "./_command.ts";
import { commonArgs, readArgs } from "./_args.ts";
import { existingDb, withDb } from "./_db.ts";
import { printJson, printTable, say } from "./_output.ts";
import { addDomain, listDomains, removeDomain } from "../policy/local-domains.ts";
import { notFound, usageError } from "../errors.ts";
import { normaliseHost } from "../util/names.ts";
import { isoTime, tableTime } from "../util/time.ts";

const domainArg = { domain: { type: "positional", required: true, description: "Domain name (or IP literal for user@[1.2.3.4] addresses)", valueHint: "DOMAIN" } } as const;

export function checkDomainArg(input: string): string {
  const d = normaliseHost(input);
  if (!d) throw usageError(`invalid domain "${input}": expected a name like chat.example.org or an IP literal`);
  return d;
}

const list = command({
  meta: { name: "list", description: "List the local domains" },
  args: readArgs,
  examples: ["madmail domain list", "madmail domain list --json"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const rows = await listDomains(db);
      if (args.json) return printJson(rows.map((r) => ({ name: r.name, created_at: isoTime(r.created_at) })));
      if (!rows.length) return say(args, "No local domains. Add one with `madmail domain add DOMAIN`.");
      printTable(["DOMAIN", "ADDED AT"], rows.map((r) => [r.name, tableTime(r.created_at)]));
    }),
});

const add = command({
  meta: { name: "add", description: "Add a local domain (mail for it is delivered here)" },
  args: { ...domainArg, ...commonArgs },
  examples: ["madmail domain add chat.example.org"],
  run: ({ args }) => {
    const d = checkDomainArg(args.domain);
    return withDb(args, async ({ db }) => {
      const added = await addDomain(db, d);
      say(args, added ? `Domain added: ${d}` : `Domain already present: ${d}`);
    });
  },
});

const remove = command({
  meta: { name: "remove", description: "Remove a local domain (users and Maildirs are kept)" },
  args: { ...domainArg, ...commonArgs },
  examples: ["madmail domain remove old.example.org"],
  run: ({ args }) => {
    const d = checkDomainArg(args.domain);
    return existingDb(args, async ({ db }) => {
      if (!(await removeDomain(db, d))) throw notFound(`no local domain "${d}"`);
      say(args, `Domain removed: ${d}`);
    });
  },
});

export default command({
  meta: { name: "domain", description: "Manage the local domains" },
  subCommands: { list, add, remove },
  examples: ["madmail domain add chat.example.org", "madmail domain list"],
});
