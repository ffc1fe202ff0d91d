// Runs the command tree. Unlike citty's runMain: usage errors exit 2, unknown flags and
// extra arguments are refused (a typo must not be silently ignored), help shows examples.
import { CLIError, type ArgsDef, type CommandDef } from "./_citty.ts";
import { renderUsage, runCommand } from "citty";
import { MadmailError } from "../errors.ts";
import { aliases, root } from "./index.ts";
import type { MadmailCommand } from "./_command.ts";

/** Flags every command takes, and whether they take a value. */
const GLOBAL_FLAGS = new Map([["--db", true], ["--json", false], ["--quiet", false]]);

export async function main(argv: string[]): Promise<number> {
  const path: MadmailCommand[] = [root];
  let rest = [...argv];
  try {
    const versionAsked = rest.filter((a) => a === "--version" || a === "-v").length === 1;
    if (versionAsked && rest.every((a) => a === "--version" || a === "-v" || a === "--json")) {
      const version = (root.meta as { version: string }).version;
      process.stdout.write(rest.includes("--json") ? JSON.stringify({ version }) + "\n" : `${version}\n`);
      return 0;
    }
    // Global flags may stand before the command words: `madmail --db X user list`.
    const globals: string[] = [];
    // Walk down the tree by leading words.
    for (;;) {
      while (rest[0] && GLOBAL_FLAGS.has(rest[0].split("=")[0]!)) {
        const flag = rest.shift()!;
        globals.push(flag);
        if (GLOBAL_FLAGS.get(flag) && rest.length) globals.push(rest.shift()!);
      }
      const cmd = path.at(-1)!;
      const subs = (await resolve(cmd.subCommands)) as Record<string, CommandDef<any> | (() => Promise<CommandDef<any>>)> | undefined;
      const word = rest[0];
      if (!subs || word === undefined || word.startsWith("-")) break;
      const name = path.length === 1 ? (aliases[word] ?? word) : word;
      const entry = subs[name];
      if (!entry) throw new CLIError(`unknown command "${word}"`, "E_UNKNOWN_COMMAND");
      path.push((await resolve(entry))!);
      rest = rest.slice(1);
    }
    // In front: a flag at the end still missing its value must not take a global flag as it.
    rest.unshift(...globals);
    const leaf = path.at(-1)!;
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(await renderHelp(path) + "\n");
      return 0;
    }
    if (!leaf.run) {
      if (rest.length === 0 && path.length === 1) {
        process.stdout.write(await renderHelp(path) + "\n");
        return 0;
      }
      // `madmail --db` alone: name the missing value or command, not "--db" as a command.
      if (rest.length === 1 && GLOBAL_FLAGS.get(rest[0]!)) throw new CLIError(`option ${rest[0]} needs a value`, "EARG");
      const global = GLOBAL_FLAGS.has(rest[0]?.split("=")[0] ?? "");
      throw new CLIError(rest.length && !global ? `unknown command "${rest[0]}"` : "missing command", "E_NO_COMMAND");
    }
    const rawArgs = checkArgs(rest, (await resolve(leaf.args)) ?? {});
    await runCommand(leaf, { rawArgs });
    return 0;
  } catch (err) {
    return reportError(err, path);
  }
}

async function reportError(err: unknown, path: MadmailCommand[]): Promise<number> {
  if (err instanceof CLIError || (err instanceof Error && err.name === "CLIError")) {
    const names = path.map((c) => (c.meta as { name?: string } | undefined)?.name).filter(Boolean).join(" ");
    process.stderr.write(`madmail: ${stripAnsi(err.message)}\nRun \`${names || "madmail"} --help\` for usage.\n`);
    return 2;
  }
  if (err instanceof MadmailError) {
    process.stderr.write(`madmail: ${err.message}\n`);
    return err.exitCode;
  }
  // Operating conditions, not bugs: one sentence, no stack.
  const code = (err as { code?: string } | undefined)?.code;
  const plain = code && OPERATIONAL[code];
  if (plain) {
    process.stderr.write(`madmail: ${plain}: ${(err as Error).message}\n`);
    return code === "SQLITE_BUSY" ? 75 : 1;
  }
  // Some library errors (libsql's SqliteError) have a stack that lacks their message.
  const e = err as Error | undefined;
  const stack = e?.stack ?? String(err);
  const text = e?.message && !stack.includes(e.message) ? `${e.name}: ${e.message}\n${stack}` : stack;
  process.stderr.write(`madmail: internal error: ${text}\n`);
  return 1;
}

/** Error codes that describe the machine, with what the sysadmin should look at. */
const OPERATIONAL: Record<string, string> = {
  SQLITE_READONLY: "cannot write the state file (is it, or its directory, read-only for this user? SQLite also writes the -wal and -shm files beside it)",
  SQLITE_CANTOPEN: "cannot open the state file or its -wal/-shm files (permissions of the file and its directory?)",
  SQLITE_FULL: "the disk holding the state file is full",
  SQLITE_BUSY: "the state file stayed locked by another process; try again",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOSPC: "no space left on the device",
  EROFS: "read-only file system",
};

/** A value such as -5, -1.5 or -1G: a (negative) positional, never a flag. */
const NEGATIVE_NUMBER = /^-\d+(?:\.\d+)?[a-z]*$/i;

/**
 * Refuses flags a command does not declare and positional arguments beyond those it takes.
 * Returns the argv for citty with the positionals after `--`, so that a value like -5 reaches
 * the command's own validation (with its message) instead of being parsed as a flag.
 */
function checkArgs(rawArgs: string[], argsDef: ArgsDef): string[] {
  const known = new Set<string>();
  // Only an on/off flag has a --no- form: citty would hand `false` to an option that wants a value.
  const switches = new Set<string>();
  let takes = 0;
  for (const [name, d] of Object.entries(argsDef)) {
    if (d.type === "positional") {
      takes++;
      continue;
    }
    const names = [name, toKebab(name), ...aliasesOf(d)];
    for (const n of names) known.add(n);
    if (d.type === "boolean") for (const n of names) switches.add(n);
  }
  const options: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") {
      positionals.push(...rawArgs.slice(i + 1));
      break;
    }
    if (a.startsWith("-") && a !== "-" && !NEGATIVE_NUMBER.test(a)) {
      const name = a.replace(/^--?/, "").split("=")[0]!;
      const negated = name.startsWith("no-") && switches.has(name.slice(3));
      if (!known.has(name) && !negated) throw new CLIError(`unknown option "${a.split("=")[0]}"`, "EARG");
      options.push(a);
      const d = argsDef[name] ?? argsDef[toCamel(name)] ?? Object.values(argsDef).find((x) => aliasesOf(x).includes(name));
      if (d && (d.type === "string" || d.type === "enum") && !a.includes("=")) {
        if (i + 1 >= rawArgs.length) throw new CLIError(`option ${a} needs a value`, "EARG");
        options.push(rawArgs[++i]!);
      }
      continue;
    }
    positionals.push(a);
  }
  if (positionals.length > takes) throw new CLIError(`too many arguments`, "EARG");
  return positionals.length ? [...options, "--", ...positionals] : options;
}

/** citty names only one parent level; give it the whole path so usage reads `madmail exchanger add`. */
async function renderHelp(path: MadmailCommand[]): Promise<string> {
  const cmd = path.at(-1)!;
  const names = path.slice(0, -1).map((c) => (c.meta as { name?: string } | undefined)?.name).filter(Boolean).join(" ");
  const parent = path.length > 1 ? { meta: { name: names, version: (root.meta as { version: string }).version } } : undefined;
  const sections = [await renderUsage(cmd, parent)];
  if (cmd.details?.length) sections.push(`DETAILS\n\n${cmd.details.map((p) => wrap(p, 96, "  ")).join("\n\n")}`);
  if (cmd.examples?.length) sections.push(`EXAMPLES\n\n${cmd.examples.map((e) => `  ${e}`).join("\n")}`);
  // citty pads every row of a column to the widest one: no trailing blanks to wrap in a narrow terminal.
  return sections.join("\n\n").split("\n").map((l) => l.trimEnd()).join("\n");
}

/** Words of `text` on lines of at most `width` characters (a longer word gets a line of its own). */
function wrap(text: string, width: number, indent: string): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(indent + line);
  return lines.join("\n");
}

async function resolve<T>(v: T | (() => T) | (() => Promise<T>) | Promise<T> | undefined): Promise<T | undefined> {
  return typeof v === "function" ? await (v as () => T)() : await v;
}

const toKebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const toCamel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, "");
const aliasesOf = (d: ArgsDef[string]): string[] => ("alias" in d && d.alias ? [d.alias].flat() : []);
