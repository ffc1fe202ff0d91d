import { command } from "./_command.ts";
import { dbArgs } from "./_args.ts";
import { existingDb } from "./_db.ts";
import { listDomains } from "../policy/local-domains.ts";
import { loadConfig } from "../db/settings.ts";
import { MadmailError } from "../errors.ts";

const postfixMaps = command({
  meta: { name: "postfix-maps", description: "Print Postfix map lines that hand the local domains to madmail's LMTP listener" },
  details: ["--kind transport prints transport_maps lines (each local domain to lmtp: at the listen.lmtp address); " +
    "--kind relay-domains prints relay_domains lines, so that Postfix accepts mail for those domains."],
  args: {
    kind: { type: "enum", options: ["transport", "relay-domains"], default: "transport", description: "Which map to print" },
    ...dbArgs,
  },
  examples: [
    "madmail mta postfix-maps > /etc/postfix/madmail_transport && postmap /etc/postfix/madmail_transport",
    "madmail mta postfix-maps --kind relay-domains > /etc/postfix/madmail_domains && postmap /etc/postfix/madmail_domains",
    "# main.cf: transport_maps = hash:/etc/postfix/madmail_transport",
    "#          relay_domains = hash:/etc/postfix/madmail_domains",
  ],
  run: ({ args }) =>
    existingDb(args, async ({ db }) => {
      const domains = await listDomains(db);
      let lines = domains.map((d) => `${d.name} ${d.name}`);
      // Only the transport map names the LMTP listener.
      if (args.kind === "transport") {
        const lmtp = (await loadConfig(db))["listen.lmtp"];
        if (!lmtp) throw new MadmailError("config", "listen.lmtp is off; set it first (`madmail config set listen.lmtp 127.0.0.1:8024`)");
        const host = lmtp.host === "0.0.0.0" ? "127.0.0.1" : lmtp.host === "::" ? "::1" : lmtp.host;
        lines = domains.map((d) => `${d.name} lmtp:[${host.includes(":") ? `ipv6:${host}` : host}]:${lmtp.port}`);
      }
      if (lines.length) process.stdout.write(lines.join("\n") + "\n");
      else process.stderr.write("No local domains; add one with `madmail domain add DOMAIN`.\n");
    }),
});

export default command({
  meta: { name: "mta", description: "Hook madmail behind an MTA (Postfix, Exim) over LMTP" },
  subCommands: { "postfix-maps": postfixMaps },
  examples: ["madmail mta postfix-maps"],
});
