import { command } from "./_command.ts";
import { commonArgs, readArgs } from "./_args.ts";
import { existingDb } from "./_db.ts";
import { printJson, printTable, say } from "./_output.ts";
import { deleteUser, findUser, insertUser, listUsers, setUserPassword, setUserQuota } from "../store/users.repository.ts";
import { listDomains } from "../policy/local-domains.ts";
import { loadConfig, mailRootOf } from "../db/settings.ts";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { conflict, notFound, usageError } from "../errors.ts";
import { domainOf, normaliseAddress } from "../util/names.ts";
import { formatSize, parseSize } from "../util/units.ts";
import { isoTime, tableTime } from "../util/time.ts";
import { hashPassword } from "../util/password.ts";
import type { Db } from "../db/open.ts";
import { RESERVED_LOCAL_PARTS, isReservedLocalPart } from "../inbound/recipients.ts";
import { isSafeName } from "../store/maildir-names.ts";

const addrArg = { address: { type: "positional", required: true, valueHint: "ADDRESS", description: "user@domain (domain must be local)" } } as const;
const sizeHint = "a size like 500M or 1G, or `default`";

function checkAddress(input: string): string {
  const a = normaliseAddress(input);
  if (!a) throw usageError(`invalid address "${input}": expected user@domain`);
  return a;
}

/**
 * An RFC 5321 dot-atom local part (UTF-8 allowed, as SMTPUTF8 does), without "/": it names the
 * user's Maildir directory. "a/b", "..", "a@b" or control characters would be refused by the
 * store at every delivery (a temporary error until the queue gives up) and cannot be logged into.
 */
const LOCAL_PART = /^[^\x00-\x20\x7f()<>\[\]:;@\\,."/]+(?:\.[^\x00-\x20\x7f()<>\[\]:;@\\,."/]+)*$/u;

function checkNewAddress(input: string): string {
  const a = checkAddress(input);
  const local = a.slice(0, a.lastIndexOf("@"));
  if (!LOCAL_PART.test(local) || !isSafeName(a)) {
    throw usageError(`invalid address "${input}": the part before @ must be dot-separated words without "/", "@", spaces, control characters or ()<>[]:;\\,"`);
  }
  if (isReservedLocalPart(a)) {
    throw usageError(`"${a}" uses a reserved local part (${[...RESERVED_LOCAL_PARTS].join(", ")}); mail from outside never reaches it`);
  }
  return a;
}

/** null = the quota.default setting. */
function checkQuota(input: string): number | null {
  if (input === "default") return null;
  const n = parseSize(input);
  if (n === null || n <= 0) throw usageError(`invalid quota "${input}": expected ${sizeHint}`);
  return n;
}

async function readPasswordFromStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const pw = Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
  if (!pw) throw usageError("empty password on standard input");
  if (pw.includes("\n")) throw usageError("the password must be one line");
  return pw;
}

async function requireLocalDomain(db: Db, address: string): Promise<void> {
  const domain = domainOf(address);
  if (!(await listDomains(db)).some((d) => d.name === domain)) {
    throw usageError(`"${domain}" is not a local domain; add it first with \`madmail domain add ${domain}\``);
  }
}

const list = command({
  meta: { name: "list", description: "List local users with quota and usage" },
  args: readArgs,
  examples: ["madmail user list", "madmail user list --json | jq -r '.[].address'"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const [rows, config] = [await listUsers(db), await loadConfig(db)];
      const views = rows.map((u) => ({
        address: u.address,
        quota_bytes: u.quota_bytes ?? config["quota.default"],
        quota_is_default: u.quota_bytes === null,
        used_bytes: u.used_bytes,
        has_password: u.password_hash !== null,
        created_at: isoTime(u.created_at),
      }));
      if (args.json) return printJson(views);
      if (!views.length) return say(args, "No users. Add one with `madmail user add ADDRESS --password-stdin`.");
      printTable(
        ["ADDRESS", "QUOTA", "USED", "PASSWORD", "CREATED AT"],
        views.map((v, i) => [v.address, formatSize(v.quota_bytes) + (v.quota_is_default ? " (default)" : ""), formatSize(v.used_bytes), v.has_password ? "set" : "none", tableTime(rows[i]!.created_at)]),
      );
    }),
});

const add = command({
  meta: { name: "add", description: "Add a local user (password read from standard input with --password-stdin)" },
  args: {
    ...addrArg,
    "password-stdin": { type: "boolean", description: "Read the password from standard input (one line)" },
    quota: { type: "string", valueHint: "SIZE", description: `Mailbox quota (${sizeHint}; default: setting quota.default)` },
    ...commonArgs,
  },
  examples: ["echo 's3cret' | madmail user add alice@chat.example --password-stdin", "madmail user add bob@chat.example --quota 500M"],
  run: async ({ args }) => {
    const address = checkNewAddress(args.address);
    const quota = args.quota === undefined ? null : checkQuota(args.quota);
    const password = args["password-stdin"] ? await readPasswordFromStdin() : null;
    const hash = password === null ? null : await hashPassword(password);
    return existingDb(args, async ({ db, dataDir }) => {
      await requireLocalDomain(db, address);
      if (!(await insertUser(db, address, hash, quota))) throw conflict(`user ${address} already exists`);
      say(args, `User added: ${address}`);
      warnOfOldMaildir(join(mailRootOf(await loadConfig(db), dataDir), address), address);
    });
  },
});

/** `user remove` keeps the Maildir: a new user of the same address gets what is in it. */
function warnOfOldMaildir(dir: string, address: string): void {
  const messages = ["new", "cur"].reduce((n, sub) => {
    try {
      return n + readdirSync(join(dir, sub), { withFileTypes: true }).filter((e) => e.isFile()).length;
    } catch {
      return n; // no such Maildir (the usual case), or not readable by this user
    }
  }, 0);
  if (messages) {
    process.stderr.write(`madmail: warning: ${dir} already holds ${messages} message${messages === 1 ? "" : "s"} (left by a removed user?): ` +
      `${address} gets them over IMAP; move the directory away if it should not. The quota counts them from serve's next recount (within 10 minutes).\n`);
  }
}

const remove = command({
  meta: { name: "remove", description: "Remove a local user (the Maildir is left on disk)" },
  args: { ...addrArg, ...commonArgs },
  examples: ["madmail user remove alice@chat.example"],
  run: ({ args }) => {
    const address = checkAddress(args.address);
    return existingDb(args, async ({ db }) => {
      if (!(await deleteUser(db, address))) throw notFound(`no user ${address}`);
      say(args, `User removed: ${address}`);
    });
  },
});

const quota = command({
  meta: { name: "quota", description: "Set a user's mailbox quota" },
  args: { ...addrArg, size: { type: "positional", required: true, valueHint: "SIZE", description: sizeHint }, ...commonArgs },
  examples: ["madmail user quota alice@chat.example 2G", "madmail user quota alice@chat.example default"],
  run: ({ args }) => {
    const address = checkAddress(args.address);
    const q = checkQuota(args.size);
    return existingDb(args, async ({ db }) => {
      if (!(await setUserQuota(db, address, q))) throw notFound(`no user ${address}`);
      say(args, `Quota of ${address}: ${q === null ? "default" : formatSize(q)}`);
    });
  },
});

const password = command({
  meta: { name: "password", description: "Set a user's password from standard input" },
  args: { ...addrArg, ...commonArgs },
  examples: ["printf '%s' \"$NEWPW\" | madmail user password alice@chat.example"],
  run: async ({ args }) => {
    const address = checkAddress(args.address);
    return existingDb(args, async ({ db }) => {
      if (!(await findUser(db, address))) throw notFound(`no user ${address}`);
      await setUserPassword(db, address, await hashPassword(await readPasswordFromStdin()));
      say(args, `Password set: ${address}`);
    });
  },
});

export default command({
  meta: { name: "user", description: "Manage local users, passwords and quotas" },
  subCommands: { list, add, remove, quota, password },
  examples: ["echo pw | madmail user add alice@chat.example --password-stdin --quota 1G", "madmail user list"],
});
