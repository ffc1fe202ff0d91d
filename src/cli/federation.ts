import { command } from "./_command.ts";
import { commonArgs, readArgs } from "./_args.ts";
import { existingDb, withDb } from "./_db.ts";
import { printJson, printTable, say } from "./_output.ts";
import { oneLine } from "./queue/_format.ts";
import { checkDomainArg } from "./domain.ts";
import { addRule, listRules, removeRules, type RuleKind } from "../policy/federation.ts";
import { listDomains } from "../policy/local-domains.ts";
import { loadConfig } from "../db/settings.ts";
import { notFound } from "../errors.ts";
import { isoTime, tableTime } from "../util/time.ts";

const domainArg = { domain: { type: "positional", required: true, valueHint: "DOMAIN", description: "Peer domain (also covers its subdomains)" } } as const;

const policy = command({
  meta: { name: "policy", description: "Show or set the mode: accept (rules block) or reject (rules allow)" },
  args: { mode: { type: "positional", required: false, valueHint: "accept|reject", description: "New mode; omit to show the current one" }, ...readArgs },
  examples: ["madmail federation policy", "madmail federation policy reject", "madmail federation policy --json"],
  run: async ({ args }) => {
    if (args.mode === undefined) {
      return existingDb(args, async ({ db }) => {
        const mode = (await loadConfig(db))["federation.policy"];
        if (args.json) return printJson({ mode });
        return say(args, mode === "accept" ? "accept: all peers except blocked domains" : "reject: only allowed domains");
      });
    }
    const { checkSetting } = await import("../db/settings.ts");
    const { stored } = checkSetting("federation.policy", args.mode);
    return withDb(args, async ({ db }) => {
      await db.insertInto("settings").values({ key: "federation.policy", value: stored })
        .onConflict((oc) => oc.column("key").doUpdateSet({ value: stored })).execute();
      if (args.json) printJson({ mode: stored });
      else say(args, `Federation policy: ${stored}`);
    });
  },
});

const addCommand = (name: string, kind: RuleKind, description: string, done: string) =>
  command({
    meta: { name, description },
    args: { ...domainArg, ...commonArgs },
    examples: [`madmail federation ${name} spam.example`],
    run: ({ args }) => {
      const domain = checkDomainArg(args.domain);
      return withDb(args, async ({ db }) => {
        const added = await addRule(db, domain, kind);
        say(args, added ? `${done}: ${domain}` : `${done} already: ${domain}`);
        if ((await listDomains(db)).some((d) => d.name === domain)) {
          process.stderr.write(`madmail: warning: ${domain} is a local domain; local domains always pass, so this rule has no effect\n`);
        }
      });
    },
  });

const removeCommand = (name: string, kinds: RuleKind[], description: string, what: string) =>
  command({
    meta: { name, description },
    args: { ...domainArg, ...commonArgs },
    examples: [`madmail federation ${name} spam.example`],
    run: ({ args }) => {
      const domain = checkDomainArg(args.domain);
      return existingDb(args, async ({ db }) => {
        if (!(await removeRules(db, domain, kinds))) throw notFound(`no ${what} rule for "${domain}"`);
        say(args, `Removed ${what} rule: ${domain}`);
      });
    },
  });

const list = command({
  meta: { name: "list", description: "Show the mode and every rule" },
  args: readArgs,
  examples: ["madmail federation list", "madmail federation list --json"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const mode = (await loadConfig(db))["federation.policy"];
      const rules = await listRules(db);
      if (args.json) return printJson({ mode, rules: rules.map((r) => ({ domain: r.domain, kind: r.kind, created_at: isoTime(r.created_at) })) });
      say(args, `Mode: ${mode} (${mode === "accept" ? "block rules apply, allow rules are ignored" : "allow rules apply, block rules are ignored"})`);
      if (!rules.length) return say(args, "No federation rules.");
      printTable(["DOMAIN", "RULE", "ADDED AT"], rules.map((r) => [r.domain, r.kind, tableTime(r.created_at)]));
    }),
});

const status = command({
  meta: { name: "status", description: "Per peer domain: deliveries out (by transport) and in, latency, last error" },
  args: readArgs,
  examples: ["madmail federation status", "madmail federation status --json | jq '.[] | select(.failures > 0)'"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const { readFederationStats } = await import("../stats/federation-tracker.ts");
      const rows = await readFederationStats(db);
      if (args.json) return printJson(rows);
      if (!rows.length) return say(args, "No federation traffic recorded yet (a running server writes its counters every 30 s).");
      printTable(
        ["DOMAIN", "OUT OK", "OUT FAIL", "HTTPS", "HTTP", "SMTP", "IN", "MEAN MS", "LAST MS", "LAST ACTIVE", "LAST ERROR"],
        rows.map((r) => [
          r.domain, String(r.successes), String(r.failures), `${r.https_ok}/${r.https_fail}`, `${r.http_ok}/${r.http_fail}`, `${r.smtp_ok}/${r.smtp_fail}`,
          String(r.inbound), r.mean_latency_ms === null ? "-" : String(r.mean_latency_ms), r.last_latency_ms === null ? "-" : String(r.last_latency_ms),
          r.last_active_at ? r.last_active_at.slice(0, 19).replace("T", " ") : "never", oneLine(r.last_error ?? "", 60),
        ]),
      );
    }),
});

export default command({
  meta: { name: "federation", description: "Federation policy: which peer domains may deliver here" },
  subCommands: {
    policy,
    block: addCommand("block", "block", "Refuse mail from a domain (in accept mode)", "Blocked"),
    allow: addCommand("allow", "allow", "Accept mail from a domain (in reject mode)", "Allowed"),
    remove: removeCommand("remove", ["block", "allow"], "Remove the block/allow rule of a domain", "block/allow"),
    dismiss: addCommand("dismiss", "dismiss", "Answer success to a domain's mail but keep nothing", "Dismissed"),
    undismiss: removeCommand("undismiss", ["dismiss"], "Stop dismissing a domain's mail", "dismiss"),
    list,
    status,
  },
  examples: ["madmail federation policy reject", "madmail federation allow friend.example", "madmail federation dismiss noisy.example"],
});
