// The command tree. Each group loads only when its name is on the command line.
import type { CommandDef } from "citty";
import { VERSION } from "../version.ts";
import type { MadmailCommand } from "./_command.ts";

type Loader = () => Promise<CommandDef<any>>;
const load = (p: Promise<{ default: CommandDef<any> }>) => p.then((m) => m.default);

export const subCommands: Record<string, Loader> = {
  serve: () => load(import("./serve.ts")),
  init: () => load(import("./init.ts")),
  config: () => load(import("./config.ts")),
  domain: () => load(import("./domain.ts")),
  "endpoint-cache": () => load(import("./endpoint-cache.ts")),
  exchanger: () => load(import("./exchanger/index.ts")),
  "pull-client": () => load(import("./pull-client.ts")),
  user: () => load(import("./user.ts")),
  federation: () => load(import("./federation.ts")),
  mta: () => load(import("./mta.ts")),
  send: () => load(import("./send.ts")),
  "admin-token": () => load(import("./admin-token.ts")),
  queue: () => load(import("./queue/index.ts")),
  dkim: () => load(import("./dkim.ts")),
};

/** Alternative names, resolved before lookup so that aliases cost no imports. */
export const aliases: Record<string, string> = { "dns-cache": "endpoint-cache" };

export const root: MadmailCommand = {
  meta: {
    name: "madmail",
    version: VERSION,
    description: "Federation and delivery core of a chatmail server",
  },
  subCommands,
  details: [
    "Every command takes --db PATH (the state file; else $MADMAIL_DB, else ./madmail-data/madmail.db), also before the command " +
      "(madmail --db /var/lib/madmail/madmail.db user list). Listing and status commands take --json for one JSON document; " +
      "--quiet hides confirmations. Exit status: 0 done, 1 failed (not found, conflict, unusable state file), " +
      "2 usage error (nothing changed), 75 temporary failure (try again).",
  ],
  examples: [
    "madmail init --domain chat.example.org",
    "madmail serve",
    "madmail endpoint-cache set a.example b.example --comment 'moved'",
    "madmail exchanger add relay1 https://relay1.example --mode pull",
    "madmail config list --json",
  ],
};
