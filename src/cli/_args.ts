// Flags shared by many commands, spread into each command's args.
import type { ArgDef } from "citty";

export const dbArgs = {
  db: { type: "string", valueHint: "PATH", description: "State file (env MADMAIL_DB; default ./madmail-data/madmail.db)" },
} as const satisfies Record<string, ArgDef>;

export const jsonArgs = {
  json: { type: "boolean", description: "Print one JSON document on stdout instead of a table" },
} as const satisfies Record<string, ArgDef>;

export const quietArgs = {
  quiet: { type: "boolean", description: "Print only errors" },
} as const satisfies Record<string, ArgDef>;

/** Every command that touches state takes these. */
export const commonArgs = { ...dbArgs, ...quietArgs } as const;
/** Read commands also take --json. */
export const readArgs = { ...dbArgs, ...jsonArgs, ...quietArgs } as const;

/** Every value of a repeated flag (`--to a --to b`, `--to=c`): citty keeps only the last one. */
export function repeatedFlag(raw: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const a = raw[i]!;
    if (a === flag && i + 1 < raw.length) out.push(raw[++i]!);
    else if (a.startsWith(`${flag}=`)) out.push(a.slice(flag.length + 1));
  }
  return out;
}
