import { command } from "./_command.ts";
import { commonArgs, readArgs } from "./_args.ts";
import { existingDb, withDb } from "./_db.ts";
import { printJson, printTable, say } from "./_output.ts";
import { checkSetting, isSettingKey, readStoredSettings, settingsRegistry, type SettingDef } from "../db/settings.ts";
import { usageError } from "../errors.ts";

const keyArg = { key: { type: "positional", required: true, description: "Setting key (see `madmail config list`)", valueHint: "KEY" } } as const;

interface SettingView {
  key: string;
  value: string;
  default: string;
  is_default: boolean;
  type: string;
  description: string;
}

function view(key: string, stored: Map<string, string>): SettingView {
  const d = settingsRegistry[key as keyof typeof settingsRegistry] as SettingDef<unknown>;
  let value = stored.get(key);
  if (value !== undefined && !parses(d, value)) {
    // What serve does with it (settings.ts loadConfig): the default is effective.
    process.stderr.write(`madmail: warning: ${key}: the stored value ${JSON.stringify(value)} is invalid, so the default is in effect; ` +
      `fix it with \`madmail config set ${key} VALUE\` or \`madmail config unset ${key}\`\n`);
    value = undefined;
  }
  const shown = d.secret && value ? "********" : (value ?? d.default);
  return { key, value: shown, default: d.default, is_default: value === undefined, type: d.type, description: d.description };
}

function parses(d: SettingDef<unknown>, text: string): boolean {
  try {
    d.parse(text);
    return true;
  } catch {
    return false;
  }
}

function requireKey(key: string): void {
  if (!isSettingKey(key)) throw usageError(`unknown setting "${key}"; run \`madmail config list\` to see every key`);
}

const list = command({
  meta: { name: "list", description: "Show every setting with its effective value and whether it is the default" },
  args: readArgs,
  examples: ["madmail config list", "madmail config list --json | jq -r '.[] | select(.is_default == false) | .key'"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const stored = await readStoredSettings(db);
      const views = Object.keys(settingsRegistry).map((k) => view(k, stored));
      // Left by another madmail version (a key renamed or dropped): no effect, but visible.
      for (const k of stored.keys()) {
        if (!isSettingKey(k)) process.stderr.write(`madmail: warning: the state file holds "${k}", which is not a setting of this madmail and has no effect; remove it with \`madmail config unset ${k}\`\n`);
      }
      if (args.json) return printJson(views);
      printTable(
        ["KEY", "VALUE", "SOURCE", "DESCRIPTION"],
        views.map((v) => [v.key, v.value === "" ? '""' : v.value, v.is_default ? "default" : "set", v.description]),
      );
    }),
});

const get = command({
  meta: { name: "get", description: "Print the effective value of one setting" },
  args: { ...keyArg, ...readArgs },
  examples: ["madmail config get listen.http", "madmail config get limits.max_message_size --json"],
  run: ({ args }) => {
    requireKey(args.key);
    return existingDb(args, async ({ db }) => {
      const v = view(args.key, await readStoredSettings(db));
      if (args.json) return printJson(v);
      process.stdout.write(v.value + "\n");
    });
  },
});

const set = command({
  meta: { name: "set", description: "Change a setting (a running server uses most from its next message on)" },
  details: ["listen.*, mail_root, mail.uid, mail.gid and log.format are read when `madmail serve` starts: after changing one, " +
    "restart the server (the confirmation line says so). Every other setting applies to a running server from its next message " +
    "or connection on; a renewed tls.cert and tls.key within a minute, or at once on SIGHUP (a certificate set for the first " +
    "time needs a restart: a server started without one runs no TLS)."],
  args: { ...keyArg, value: { type: "positional", required: true, description: "New value, in the form `config list` describes; - reads it from the first line of standard input", valueHint: "VALUE" }, ...commonArgs },
  examples: [
    "madmail config set listen.smtp 0.0.0.0:25", "madmail config set limits.max_message_size 50M", "madmail config set listen.submissions off",
    "madmail config set relay.smarthost_password - < /etc/madmail/smarthost.pw   # not in ps or the shell history",
  ],
  run: async ({ args }) => {
    const value = args.value === "-" ? firstLine(await Bun.stdin.text()) : args.value;
    if (args.value === "-" && value === "") {
      throw usageError(`nothing on standard input for ${args.key}; to return it to its default: madmail config unset ${args.key}`);
    }
    const { key, stored } = checkSetting(args.key, value);
    return withDb(args, async ({ db }) => {
      await db.insertInto("settings").values({ key, value: stored })
        .onConflict((oc) => oc.column("key").doUpdateSet({ value: stored })).execute();
      say(args, `${key} = ${(settingsRegistry[key] as SettingDef<unknown>).secret ? "********" : stored}${atStart(key) ? ` (${RESTART_NOTE})` : ""}`);
    });
  },
});

/** A value given on standard input: its first line, without the line ending. */
function firstLine(text: string): string {
  return text.split(/\r?\n/, 1)[0]!;
}

/** On the confirmation line of keys serve reads only when it starts (as "(default)" is). */
const RESTART_NOTE = "read when serve starts: restart it to apply";
const atStart = (key: string) => !!(settingsRegistry[key as keyof typeof settingsRegistry] as SettingDef<unknown>).atStart;

const unset = command({
  meta: { name: "unset", description: "Return a setting to its default" },
  args: { ...keyArg, ...commonArgs },
  examples: ["madmail config unset listen.smtp"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      if (!isSettingKey(args.key)) {
        // A key another madmail version stored (config list warns of it) may be removed.
        const { numDeletedRows } = await db.deleteFrom("settings").where("key", "=", args.key).executeTakeFirst();
        if (!numDeletedRows) requireKey(args.key);
        return say(args, `${args.key} removed (not a setting of this madmail)`);
      }
      await db.deleteFrom("settings").where("key", "=", args.key).execute();
      const d = settingsRegistry[args.key as keyof typeof settingsRegistry] as SettingDef<unknown>;
      say(args, `${args.key} = ${d.default} (default${d.atStart ? `; ${RESTART_NOTE}` : ""})`);
    }),
});

export default command({
  meta: { name: "config", description: "Read and change settings stored in the state file" },
  subCommands: { list, get, set, unset },
  examples: ["madmail config list", "madmail config set listen.http 0.0.0.0:443"],
});
