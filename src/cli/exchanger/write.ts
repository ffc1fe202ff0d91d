import type { CommandDef } from "citty";
import { command } from "../_command.ts";
import { commonArgs } from "../_args.ts";
import { existingDb, withDb } from "../_db.ts";
import { say } from "../_output.ts";
import {
  POLL_DEFAULT, POLL_MAX, POLL_MIN, checkDomains, checkMode, checkName, checkPollInterval, checkUrl, deleteExchanger,
  findExchanger, insertExchanger, updateExchanger,
} from "../../exchanger/exchangers.ts";
import { readTokenFile } from "../../exchanger/pull-client.ts";
import { overridesPointingAt } from "../../delivery/endpoint-overrides.ts";
import { withWriteTransaction, type Db } from "../../db/open.ts";
import { listDomains } from "../../policy/local-domains.ts";
import type { ExchangerUpdate } from "../../db/schema.ts";
import { conflict, notFound, usageError } from "../../errors.ts";
import { hashToken, newToken } from "../../util/secrets.ts";

const nameArg = { name: { type: "positional", required: true, description: "Exchanger name ([a-z0-9][a-z0-9._-]{0,62})", valueHint: "NAME" } } as const;

const optionArgs = {
  mode: { type: "enum" as const, options: ["push", "pull"], description: "push: we POST its mail to URL/mxdeliv; pull: we hold it until it pulls" },
  "poll-interval": { type: "string" as const, valueHint: "SECONDS", description: `Seconds our poller rests after an empty answer or an error from its pull endpoint (${POLL_MIN}-${POLL_MAX}; add: default ${POLL_DEFAULT})` },
  domains: { type: "string" as const, valueHint: "LIST", description: "Recipient domains routed through it: a,b,c or * for all remote mail" },
  fallback: { type: "boolean" as const, description: "Use it only for delayed reroute of mail that keeps failing" },
};

/** Quotes a key for a command line we suggest: `*.example.org` must not meet the shell's globbing. */
const shellWord = (s: string) => (/^[a-z0-9.:_-]+$/.test(s) ? s : `'${s}'`);

const unknown = (name: string) => notFound(`no exchanger named "${name}"; see \`madmail exchanger list\``);

const add = command({
  meta: { name: "add", description: "Add an exchanger" },
  args: { ...nameArg, url: { type: "positional", required: true, valueHint: "URL", description: "Its base URL (http or https)" }, ...optionArgs, ...commonArgs },
  examples: [
    "madmail exchanger add relay1 https://relay1.example --domains b.example,c.example",
    "madmail exchanger add hub https://hub.example --mode pull --poll-interval 30 --domains '*'",
    "madmail exchanger add spare https://spare.example --fallback",
  ],
  run: ({ args }) => {
    const name = checkName(args.name);
    const url = checkUrl(args.url);
    const poll = args["poll-interval"] === undefined ? POLL_DEFAULT : checkPollInterval(args["poll-interval"]);
    const domains = args.domains === undefined ? "" : checkDomains(args.domains);
    return withDb(args, async ({ db }) => {
      const now = Date.now();
      const inserted = await insertExchanger(db, {
        name, url, mode: checkMode(args.mode ?? "push"), poll_interval: poll, domains, fallback: args.fallback ? 1 : 0,
        token_hash: null, remote_token: null, last_poll_at: null, last_pull_at: null, last_error: null, created_at: now, updated_at: now,
      });
      if (!inserted) throw conflict(`exchanger "${name}" already exists; change it with \`madmail exchanger set ${name} ...\``);
      say(args, `Exchanger added: ${name} -> ${url}`);
      await warnOfLocalDomains(db, domains);
    });
  },
});

const set = command({
  meta: { name: "set", description: "Change an exchanger's URL, mode, interval, domains or fallback flag" },
  args: {
    ...nameArg,
    url: { type: "string", valueHint: "URL", description: "New base URL" },
    ...optionArgs,
    fallback: { ...optionArgs.fallback, negativeDescription: "Route its domains through it normally again" },
    "remote-token-file": { type: "string", valueHint: "FILE", description: "Store our token at this partner (first line of FILE): we then poll its pull endpoint and present it when pushing" },
    "remote-token": { type: "boolean", description: "(set it with --remote-token-file FILE)", negativeDescription: "Forget our token at this partner: stop polling it" },
    ...commonArgs,
  },
  examples: [
    "madmail exchanger set relay1 --domains '*'", "madmail exchanger set hub --mode push --url https://hub2.example", "madmail exchanger set spare --no-fallback",
    "madmail exchanger set hub --remote-token-file /etc/madmail/hub.token", "madmail exchanger set hub --no-remote-token",
  ],
  run: ({ args }) => {
    const name = checkName(args.name);
    const changes: ExchangerUpdate = {};
    if (args.url !== undefined) changes.url = checkUrl(args.url);
    if (args.mode !== undefined) changes.mode = checkMode(args.mode);
    if (args["poll-interval"] !== undefined) changes.poll_interval = checkPollInterval(args["poll-interval"]);
    if (args.domains !== undefined) changes.domains = checkDomains(args.domains);
    if (args.fallback !== undefined) changes.fallback = args.fallback ? 1 : 0;
    if (args["remote-token"] === true) throw usageError("--remote-token takes no value: give --remote-token-file FILE (or --no-remote-token to clear it)");
    if (args["remote-token"] === false && args["remote-token-file"] !== undefined) throw usageError("give either --remote-token-file or --no-remote-token, not both");
    if (args["remote-token"] === false) changes.remote_token = null;
    if (args["remote-token-file"] !== undefined) changes.remote_token = readTokenFile(args["remote-token-file"]);
    if (!Object.keys(changes).length) throw usageError("nothing to change: give at least one of --url, --mode, --poll-interval, --domains, --fallback/--no-fallback, --remote-token-file/--no-remote-token");
    return existingDb(args, async ({ db }) => {
      if (!(await updateExchanger(db, name, changes))) throw unknown(name);
      say(args, `Exchanger updated: ${name}`);
      if (changes.domains) await warnOfLocalDomains(db, changes.domains);
    });
  },
});

const toggle = (enable: boolean) =>
  command({
    meta: { name: enable ? "enable" : "disable", description: enable ? "Start routing through an exchanger again" : "Stop routing through an exchanger (its entry is kept)" },
    args: { ...nameArg, ...commonArgs },
    examples: [`madmail exchanger ${enable ? "enable" : "disable"} relay1`],
    run: ({ args }) => {
      const name = checkName(args.name);
      return existingDb(args, async ({ db }) => {
        if (!(await updateExchanger(db, name, { enabled: enable ? 1 : 0 }))) throw unknown(name);
        say(args, `Exchanger ${enable ? "enabled" : "disabled"}: ${name}`);
      });
    },
  });

const remove = command({
  meta: { name: "remove", description: "Remove an exchanger (refused while an endpoint override points at it, or while it holds mail)" },
  details: ["Mail held for a pull exchanger would be routed afresh once it is gone (usually straight to the domain, which the " +
    "puller exists for because that fails): with mail held, remove is refused unless --force. `exchanger disable` keeps held mail waiting."],
  args: { ...nameArg, force: { type: "boolean", description: "Remove it although it holds mail (that mail is routed afresh)" }, ...commonArgs },
  examples: ["madmail exchanger remove relay1", "madmail exchanger remove relay1 --force"],
  run: ({ args }) => {
    const name = checkName(args.name);
    return existingDb(args, async ({ db }) => {
      // One write transaction: no rewrite can start pointing at it between the check and the delete.
      await withWriteTransaction(db, async (trx) => {
        if (!(await findExchanger(trx, name))) throw unknown(name);
        const keys = await overridesPointingAt(trx, name);
        if (keys.length) {
          throw conflict(`exchanger "${name}" is the target of endpoint override ${keys.map((k) => `"${k}"`).join(", ")}; ` +
            `remove or change it first (\`madmail endpoint-cache remove ${shellWord(keys[0]!)}\`)`);
        }
        const held = await trx.selectFrom("deliveries").select((eb) => eb.fn.countAll<number>().as("n"))
          .where("route", "=", `exchanger:${name}`).where("state", "in", ["queued", "deferred", "delivering", "held"]).executeTakeFirst();
        const n = Number(held?.n ?? 0);
        if (n && !args.force) {
          throw conflict(`exchanger "${name}" holds ${n} queue ${n === 1 ? "entry" : "entries"} (\`madmail queue list --json\` shows their route); ` +
            "removed, it would route them afresh (often straight to the domain, and bounce): let them be pulled, or give --force");
        }
        await deleteExchanger(trx, name);
      });
      say(args, `Exchanger removed: ${name}`);
    });
  },
});

const token = command({
  meta: { name: "token", description: "Create or rotate the token this exchanger presents to pull from us; printed once" },
  args: { ...nameArg, ...commonArgs },
  examples: ["madmail exchanger token relay1 > relay1.token"],
  run: ({ args }) => {
    const name = checkName(args.name);
    return existingDb(args, async ({ db }) => {
      const secret = newToken("mmx");
      if (!(await updateExchanger(db, name, { token_hash: hashToken(secret) }))) throw unknown(name);
      process.stdout.write(secret + "\n");
      if (!args.quiet) process.stderr.write(`Token for exchanger ${name} stored as a hash: it cannot be shown again. Any previous token no longer works.\n`);
    });
  },
});

export default { add, set, enable: toggle(true), disable: toggle(false), remove, token } as Record<string, CommandDef<any>>;

/** Mail for a local domain is stored here and never routed: listing one is most likely a typo. */
async function warnOfLocalDomains(db: Db, domains: string): Promise<void> {
  const local = new Set((await listDomains(db)).map((d) => d.name));
  for (const d of domains.split(",").filter((x) => local.has(x))) {
    process.stderr.write(`madmail: warning: ${d} is a local domain; its mail is delivered here and never goes through an exchanger\n`);
  }
}
