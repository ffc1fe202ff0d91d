import { command } from "./_command.ts";
import { commonArgs, readArgs } from "./_args.ts";
import { existingDb, withDb } from "./_db.ts";
import { printJson, printTable, say } from "./_output.ts";
import {
  deleteOverride, findOverride, formatTarget, listOverrides, normaliseLookupKey, parseTarget, upsertOverride,
} from "../delivery/endpoint-overrides.ts";
import type { DnsOverrideRow } from "../db/schema.ts";
import { findExchanger } from "../exchanger/exchangers.ts";
import { withWriteTransaction } from "../db/open.ts";
import { notFound } from "../errors.ts";
import { isoTime, tableTime } from "../util/time.ts";

const keyArg = {
  key: { type: "positional", required: true, description: "Lookup key: a domain, *.domain wildcard, or IP literal", valueHint: "KEY" },
} as const;

const toJson = (r: DnsOverrideRow) => ({
  lookup_key: r.lookup_key,
  target_host: r.target_host,
  comment: r.comment,
  created_at: isoTime(r.created_at),
  updated_at: isoTime(r.updated_at),
});

const missing = (key: string) => notFound(`no endpoint override found for "${key}"`);

const list = command({
  meta: { name: "list", description: "List endpoint overrides" },
  args: readArgs,
  examples: ["madmail endpoint-cache list", "madmail endpoint-cache list --json | jq -r '.[].lookup_key'"],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const rows = await listOverrides(db);
      if (args.json) return printJson(rows.map(toJson));
      if (!rows.length) return say(args, "No endpoint override entries.");
      printTable(
        ["LOOKUP KEY", "TARGET", "COMMENT", "CREATED AT", "UPDATED AT"],
        rows.map((r) => [r.lookup_key, r.target_host, r.comment ?? "", tableTime(r.created_at), tableTime(r.updated_at)]),
      );
    }),
});

const get = command({
  meta: { name: "get", description: "Show the override for one key" },
  args: { ...keyArg, ...readArgs },
  examples: ["madmail endpoint-cache get a.example", "madmail endpoint-cache get '*.a.example' --json"],
  run: ({ args }) => {
    const key = normaliseLookupKey(args.key);
    return existingDb(args, async ({ db }) => {
      const row = await findOverride(db, key);
      if (!row) throw missing(key);
      if (args.json) return printJson(toJson(row));
      printTable(
        ["LOOKUP KEY", "TARGET", "COMMENT", "CREATED AT", "UPDATED AT"],
        [[row.lookup_key, row.target_host, row.comment ?? "", tableTime(row.created_at), tableTime(row.updated_at)]],
      );
    });
  },
});

const set = command({
  meta: { name: "set", description: "Send mail for KEY to TARGET instead of what DNS says (adds or updates)" },
  args: {
    ...keyArg,
    target: {
      type: "positional",
      required: true,
      valueHint: "TARGET",
      description: "Host, IP, host:port, http(s) URL (path defaults to /mxdeliv) or exchanger:NAME",
    },
    comment: { type: "string", valueHint: "TEXT", description: "Why this override exists" },
    ...commonArgs,
  },
  examples: [
    "madmail endpoint-cache set a.com b.com",
    "madmail endpoint-cache set chat.example 10.0.0.5:8443 --comment 'internal route'",
    "madmail endpoint-cache set '*.example.net' https://relay.example/mxdeliv",
    "madmail endpoint-cache set b.example exchanger:relay1",
  ],
  run: ({ args }) => {
    const key = normaliseLookupKey(args.key);
    const parsed = parseTarget(args.target);
    const target = formatTarget(parsed);
    return withDb(args, async ({ db }) => {
      // One write transaction: the exchanger cannot be removed between the check and the write.
      await withWriteTransaction(db, async (trx) => {
        if (parsed.kind === "exchanger" && !(await findExchanger(trx, parsed.name))) {
          throw notFound(`no exchanger named "${parsed.name}"; add it first with \`madmail exchanger add ${parsed.name} URL\``);
        }
        await upsertOverride(trx, key, target, args.comment ?? null);
      });
      say(args, `Successfully set endpoint override: ${key} → ${target}`);
    });
  },
});

const remove = command({
  meta: { name: "remove", description: "Remove the override for KEY" },
  args: { ...keyArg, ...commonArgs },
  examples: ["madmail endpoint-cache remove a.com"],
  run: ({ args }) => {
    const key = normaliseLookupKey(args.key);
    return existingDb(args, async ({ db }) => {
      if (!(await deleteOverride(db, key))) throw missing(key);
      say(args, `Removed endpoint override: ${key}`);
    });
  },
});

export default command({
  meta: { name: "endpoint-cache", description: "Endpoint rewrites: route a domain to another host, URL or exchanger (alias: dns-cache)" },
  subCommands: { list, get, set, remove },
  examples: ["madmail endpoint-cache set a.com b.com", "madmail dns-cache list"],
});
