// madmail dkim generate | show | list: the keys outbound mail is signed with (src/delivery/dkim.ts).
import { command } from "./_command.ts";
import { commonArgs, readArgs } from "./_args.ts";
import { existingDb } from "./_db.ts";
import { printJson, printTable, say } from "./_output.ts";
import {
  DEFAULT_BITS, SELECTOR_PATTERN, createDkimKey, defaultSelector, formatTxtRecord, listDkimKeys, readDkimKey, retiredSelectors, type DkimKeyInfo,
} from "../delivery/dkim.ts";
import { listDomains } from "../policy/local-domains.ts";
import { notFound, usageError } from "../errors.ts";
import { normaliseDomain } from "../util/names.ts";
import { rsaBackend } from "../delivery/rsa-sign.ts";
import { tableTime } from "../util/time.ts";

const domainArg = { domain: { type: "positional", required: true, description: "A local domain", valueHint: "DOMAIN" } } as const;

function checkDomain(input: string): string {
  const d = normaliseDomain(input);
  if (!d) throw usageError(`invalid domain "${input}": expected a name like chat.example.org`);
  return d;
}

function checkSelector(input: string): string {
  if (!SELECTOR_PATTERN.test(input)) {
    throw usageError(`invalid selector "${input}": use 1-63 characters a-z 0-9 - starting with a letter or digit`);
  }
  return input;
}

/** created_at comes from a file a person may have edited. */
const shownTime = (iso: string) => (Number.isNaN(Date.parse(iso)) ? "unknown" : tableTime(Date.parse(iso)));

const keyJson = (k: DkimKeyInfo) => ({
  domain: k.domain,
  selector: k.selector,
  key_path: k.keyPath,
  bits: k.bits,
  created_at: k.createdAt,
  dns_name: k.dnsName,
  dns_txt: k.dnsTxt,
});

const generate = command({
  meta: { name: "generate", description: "Make the key a local domain's outbound mail is signed with; prints its DNS TXT record" },
  args: {
    ...domainArg,
    selector: { type: "string", valueHint: "NAME", description: "Selector: the key's DNS name is SELECTOR._domainkey.DOMAIN (default madmailYYYYMM, this month in UTC)" },
    bits: { type: "enum", options: ["2048", "3072", "4096"], valueHint: "BITS", description: `RSA key size (default ${DEFAULT_BITS})` },
    force: { type: "boolean", description: "Replace the domain's key (a running server signs with the new key within 10 s)" },
    ...commonArgs,
  },
  examples: [
    "madmail dkim generate chat.example.org",
    "madmail dkim generate chat.example.org --selector mail2027 --force",
    "madmail dkim generate chat.example.org >> /etc/bind/db.chat.example.org",
  ],
  run: ({ args }) => {
    const domain = checkDomain(args.domain);
    let selector = checkSelector(args.selector ?? defaultSelector());
    const bits = args.bits === undefined ? DEFAULT_BITS : Number(args.bits);
    return existingDb(args, async ({ db, dataDir }) => {
      if (!(await listDomains(db)).some((d) => d.name === domain)) {
        throw usageError(`"${domain}" is not a local domain; add it first with \`madmail domain add ${domain}\``);
      }
      // A replacement needs a DNS name of its own: under the old one, the published record would
      // stop matching the key at once, and the old record could not be kept during the change.
      // The same holds for the names of keys replaced before: their records may still be there.
      const current = args.force ? await readDkimKey(dataDir, domain).catch(() => null) : null;
      const taken = new Set([...(current ? [current.selector] : []), ...(await retiredSelectors(dataDir, domain))]);
      if (taken.has(selector)) {
        if (args.selector !== undefined) {
          throw usageError(current?.selector === selector
            ? `selector ${selector} is the one in use for ${domain}; give the new key another --selector`
            : `selector ${selector} belonged to an earlier key of ${domain} (its DNS record may still be published); give the new key another --selector`);
        }
        const base = selector;
        for (let n = 2; taken.has(selector); n++) selector = `${base}-${n}`;
      }
      const { info, replaced } = await createDkimKey(dataDir, domain, { selector, bits, force: args.force });
      // stdout: the record alone, ready for a zone file; the advice goes to stderr.
      process.stdout.write(formatTxtRecord(info) + "\n");
      if (!args.quiet) {
        const old = replaced ? ` It replaces selector ${replaced.selector}: keep that record until mail signed with it has been delivered.` : "";
        process.stderr.write(`Publish this TXT record in the DNS of ${domain}; mail from ${domain} is signed with it from now on (check: dig +short TXT ${info.dnsName}).${old}\n`);
      }
    });
  },
});

const show = command({
  meta: { name: "show", description: "Show a domain's DKIM key: selector, file, size, signing backend, DNS TXT record" },
  args: { ...domainArg, ...readArgs },
  examples: ["madmail dkim show chat.example.org", "madmail dkim show chat.example.org --json | jq -r .dns_txt"],
  run: ({ args }) => {
    const domain = checkDomain(args.domain);
    return existingDb(args, async ({ dataDir }) => {
      const key = await readDkimKey(dataDir, domain);
      if (!key) throw notFound(`no DKIM key for "${domain}"; create one with madmail dkim generate ${domain}`);
      const signer = await rsaBackend();
      if (args.json) return printJson({ ...keyJson(key), signer });
      process.stdout.write(
        [
          `Domain:     ${key.domain}`,
          `Selector:   ${key.selector}`,
          `Key file:   ${key.keyPath}`,
          `Bits:       ${key.bits}`,
          `Created at: ${shownTime(key.createdAt)}`,
          `Signed by:  ${signer === "openssl" ? "the system's OpenSSL (libcrypto.so.3)" : "the built-in crypto (no libcrypto.so.3 loaded, or MADMAIL_DKIM_OPENSSL=0)"}`,
          `DNS record:`,
          formatTxtRecord(key),
        ].join("\n") + "\n",
      );
    });
  },
});

const list = command({
  meta: { name: "list", description: "List the domains that have a DKIM key" },
  args: readArgs,
  examples: ["madmail dkim list", "madmail dkim list --json"],
  run: ({ args }) =>
    existingDb(args, async ({ dataDir }) => {
      const keys = await listDkimKeys(dataDir);
      // One damaged key hides none of the others; it is named on stderr too.
      for (const k of keys) if ("error" in k) process.stderr.write(`madmail: warning: ${k.error}\n`);
      if (args.json) return printJson(keys.map((k) => ("error" in k ? k : keyJson(k))));
      if (!keys.length) return say(args, "No DKIM keys. Create one with `madmail dkim generate DOMAIN`.");
      printTable(
        ["DOMAIN", "SELECTOR", "BITS", "CREATED AT", "DNS NAME"],
        keys.map((k) => ("error" in k ? [k.domain, "-", "-", "-", "(unusable: see the warning)"] : [k.domain, k.selector, String(k.bits), shownTime(k.createdAt), k.dnsName])),
      );
    }),
});

export default command({
  meta: { name: "dkim", description: "Manage the DKIM keys outbound mail is signed with" },
  subCommands: { generate, show, list },
  examples: ["madmail dkim generate chat.example.org", "madmail dkim show chat.example.org", "madmail dkim list --json"],
});
