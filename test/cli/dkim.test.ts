// madmail dkim generate | show | list, through the compiled binary; the printed record is fed
// back to a verifier as the DNS answer for mail signed with the key the binary wrote.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { dkimVerify } from "mailauth/lib/dkim/verify";
import { loadDkimSigner } from "../../src/delivery/dkim.ts";
import { sandbox, type Sandbox } from "../helpers/binary.ts";
import { HAS_LIBCRYPTO } from "../helpers/libcrypto.ts";

let sb: Sandbox;
let dataDir: string;
beforeEach(async () => {
  sb = sandbox();
  dataDir = dirname(sb.db);
  await ok(["domain", "add", "chat.test"]);
});
afterEach(() => sb.cleanup());

const ok = async (args: string[]) => {
  const r = await sb.run(args);
  expect({ args, code: r.code }).toEqual({ args, code: 0 });
  return r;
};
const stdout = async (args: string[]) => {
  const r = await ok(args);
  expect(r.stderr).toBe("");
  return r.stdout;
};

/** Every file and folder under the data directory's dkim/, with mode and content hash. */
const dkimTree = (): string[] => {
  const top = join(dataDir, "dkim");
  if (!existsSync(top)) return [];
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const st = statSync(p);
      out.push(`${p.slice(top.length)} ${(st.mode & 0o777).toString(8)} ${st.isDirectory() ? "dir" : createHash("sha256").update(readFileSync(p)).digest("hex")}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(top);
  return out;
};

/** Proves that a refused command changed no key file. */
const refused = async (args: string[], code: number, message: string) => {
  const before = dkimTree();
  const r = await sb.run(args);
  expect({ args, ...r }).toEqual({ args, code, stdout: "", stderr: `madmail: ${message}\n` });
  expect(dkimTree()).toEqual(before);
};

const RECORD = /^(\S+)\. IN TXT \( ((?:"[^"]{1,255}" )+)\)$/;
function parseRecord(line: string): { name: string; txt: string; strings: string[] } {
  const m = RECORD.exec(line);
  if (!m) throw new Error(`not a TXT record line: ${JSON.stringify(line)}`);
  const strings = [...m[2]!.matchAll(/"([^"]*)"/g)].map((x) => x[1]!);
  return { name: m[1]!, txt: strings.join(""), strings };
}

const thisMonth = () => {
  const d = new Date();
  return `madmail${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
};
const SAMPLE = readFileSync(resolve(import.meta.dir, "../fixtures/samples/pass-deltachat-2.57-chat.eml"));

describe("generate", () => {
  test("prints one TXT record line on stdout and a hint on stderr; mail signed with the key verifies against it", async () => {
    const r = await ok(["dkim", "generate", "Chat.Test."]);
    const sel = thisMonth();
    expect(r.stdout.split("\n")).toHaveLength(2); // one line + final newline
    const rec = parseRecord(r.stdout.trimEnd());
    expect(rec.name).toBe(`${sel}._domainkey.chat.test`);
    expect(rec.strings[0]).toBe("v=DKIM1; k=rsa; ");
    expect(rec.strings[1]).toMatch(/^p=[A-Za-z0-9+/]{253}$/);
    expect(rec.txt).toMatch(/^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$/);
    expect(r.stderr).toBe(
      `Publish this TXT record in the DNS of chat.test; mail from chat.test is signed with it from now on (check: dig +short TXT ${sel}._domainkey.chat.test).\n`,
    );

    const signed = await loadDkimSigner(dataDir).sign(SAMPLE, "chat.test");
    const lookups: string[] = [];
    const result = await dkimVerify(Buffer.from(signed), {
      resolver: async (name: string, type: string) => {
        lookups.push(`${type} ${name}`);
        return [[rec.txt]];
      },
    });
    expect(result.results.map((x) => x.status.result)).toEqual(["pass"]);
    expect(lookups).toEqual([`TXT ${sel}._domainkey.chat.test`]);
  });

  test("files: dkim/ and dkim/DOMAIN/ are 0700, the key and active.json 0600, no temporary files left", async () => {
    await ok(["dkim", "generate", "chat.test", "--selector", "s1"]);
    const d = (p: string) => (statSync(join(dataDir, "dkim", p)).mode & 0o777).toString(8);
    expect([d(""), d("chat.test"), d("chat.test/s1.key"), d("chat.test/active.json")]).toEqual(["700", "700", "600", "600"]);
    expect(readdirSync(join(dataDir, "dkim", "chat.test")).sort()).toEqual(["active.json", "s1.key"]);
    expect(readFileSync(join(dataDir, "dkim", "chat.test", "s1.key"), "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----\n[^]+\n-----END PRIVATE KEY-----\n$/);
    const active = JSON.parse(readFileSync(join(dataDir, "dkim", "chat.test", "active.json"), "utf8"));
    expect(Object.keys(active)).toEqual(["selector", "created_at"]);
    expect(active.selector).toBe("s1");
  });

  test("--quiet prints the record only; --bits 3072 makes a longer key split into strings of at most 255", async () => {
    const r = await ok(["dkim", "generate", "chat.test", "--selector", "big", "--bits", "3072", "--quiet"]);
    expect(r.stderr).toBe("");
    const rec = parseRecord(r.stdout.trimEnd());
    expect(rec.strings.length).toBe(4);
    expect(rec.strings.every((s) => s.length <= 255)).toBe(true);
    expect(JSON.parse(await stdout(["dkim", "show", "chat.test", "--json"])).bits).toBe(3072);
  });

  test("--force replaces the key: new selector active, old key file removed, hint names the old selector", async () => {
    const first = parseRecord((await ok(["dkim", "generate", "chat.test", "--selector", "old"])).stdout.trimEnd());
    const r = await ok(["dkim", "generate", "chat.test", "--selector", "new", "--force"]);
    const second = parseRecord(r.stdout.trimEnd());
    expect(second.name).toBe("new._domainkey.chat.test");
    expect(second.txt).not.toBe(first.txt);
    expect(r.stderr).toContain("It replaces selector old: keep that record until mail signed with it has been delivered.");
    expect(readdirSync(join(dataDir, "dkim", "chat.test")).sort()).toEqual(["active.json", "new.key", "retired"]);
    expect(readFileSync(join(dataDir, "dkim", "chat.test", "retired"), "utf8")).toBe("old\n");
    expect(JSON.parse(await stdout(["dkim", "show", "chat.test", "--json"])).dns_txt).toBe(second.txt);
    // The same selector again is refused: the published record would stop matching the key
    // at once, and the old one could not be kept while the new one spreads.
    await refused(["dkim", "generate", "chat.test", "--selector", "new", "--force"], 2,
      "selector new is the one in use for chat.test; give the new key another --selector");
    expect(JSON.parse(await stdout(["dkim", "show", "chat.test", "--json"])).dns_txt).toBe(second.txt);
  });

  test("an existing key without --force: exit 1, key unchanged", async () => {
    await ok(["dkim", "generate", "chat.test", "--selector", "s1"]);
    const created = JSON.parse(await stdout(["dkim", "show", "chat.test", "--json"])).created_at;
    for (const sel of ["s1", "s2"]) {
      await refused(["dkim", "generate", "chat.test", "--selector", sel], 1,
        `"chat.test" already has a DKIM key (selector s1, created ${created}); replace it with --force, then publish the new DNS record`);
    }
  });

  test("a domain that is not local: exit 2, nothing created", async () => {
    await refused(["dkim", "generate", "other.test"], 2, '"other.test" is not a local domain; add it first with `madmail domain add other.test`');
    expect(existsSync(join(dataDir, "dkim"))).toBe(false);
  });

  test.each(["Upper", "-lead", "a_b", "a.b", "x".repeat(64), "ünï", " "])("selector %p: exit 2, nothing created", async (sel) => {
    await refused(["dkim", "generate", "chat.test", "--selector", sel], 2,
      `invalid selector "${sel}": use 1-63 characters a-z 0-9 - starting with a letter or digit`);
    expect(existsSync(join(dataDir, "dkim"))).toBe(false);
  });

  test("bad domain and bad --bits: exit 2", async () => {
    await refused(["dkim", "generate", "bad_domain"], 2, 'invalid domain "bad_domain": expected a name like chat.example.org');
    const r = await sb.run(["dkim", "generate", "chat.test", "--bits", "1024"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--bits (1024). Expected one of: 2048, 3072, 4096");
    expect(existsSync(join(dataDir, "dkim"))).toBe(false);
  });
});

describe("show and list", () => {
  test("show: text and --json", async () => {
    const rec = parseRecord((await ok(["dkim", "generate", "chat.test", "--selector", "sel"])).stdout.trimEnd());
    const json = JSON.parse(await stdout(["dkim", "show", "chat.test", "--json"]));
    const keyPath = join(dataDir, "dkim", "chat.test", "sel.key");
    expect(Object.keys(json)).toEqual(["domain", "selector", "key_path", "bits", "created_at", "dns_name", "dns_txt", "signer"]);
    expect(json).toMatchObject({ domain: "chat.test", selector: "sel", key_path: keyPath, bits: 2048, dns_name: "sel._domainkey.chat.test", dns_txt: rec.txt });
    expect(json.signer).toBe(HAS_LIBCRYPTO ? "openssl" : "webcrypto");
    expect(json.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(await stdout(["dkim", "show", "chat.test"])).toBe([
      "Domain:     chat.test",
      "Selector:   sel",
      `Key file:   ${keyPath}`,
      "Bits:       2048",
      `Created at: ${json.created_at.slice(0, 19).replace("T", " ")}`,
      `Signed by:  ${HAS_LIBCRYPTO ? "the system's OpenSSL (libcrypto.so.3)" : "the built-in crypto (no libcrypto.so.3 loaded, or MADMAIL_DKIM_OPENSSL=0)"}`,
      "DNS record:",
      `sel._domainkey.chat.test. IN TXT ( ${rec.strings.map((s) => `"${s}"`).join(" ")} )`,
      "",
    ].join("\n"));
  });

  test("show --json: MADMAIL_DKIM_OPENSSL=0 means the built-in crypto signs", async () => {
    await ok(["dkim", "generate", "chat.test", "--selector", "sel"]);
    const r = await sb.run(["dkim", "show", "chat.test", "--json"], { env: { MADMAIL_DKIM_OPENSSL: "0" } });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).signer).toBe("webcrypto");
  });

  test("show without a key: exit 1", async () => {
    await refused(["dkim", "show", "chat.test"], 1, 'no DKIM key for "chat.test"; create one with madmail dkim generate chat.test');
    await refused(["dkim", "show", "nowhere.test", "--json"], 1, 'no DKIM key for "nowhere.test"; create one with madmail dkim generate nowhere.test');
  });

  test("list: empty, then one row per domain", async () => {
    expect(await stdout(["dkim", "list"])).toBe("No DKIM keys. Create one with `madmail dkim generate DOMAIN`.\n");
    expect(await stdout(["dkim", "list", "--json"])).toBe("[]\n");
    await ok(["domain", "add", "b.test"]);
    await ok(["dkim", "generate", "chat.test", "--selector", "s1"]);
    await ok(["dkim", "generate", "b.test", "--selector", "mail-2"]);
    const json = JSON.parse(await stdout(["dkim", "list", "--json"]));
    expect(json.map((k: { domain: string; selector: string; bits: number }) => [k.domain, k.selector, k.bits])).toEqual([["b.test", "mail-2", 2048], ["chat.test", "s1", 2048]]);
    // show adds what signs on this host (not a property of the key)
    const { signer, ...shown } = JSON.parse(await stdout(["dkim", "show", "chat.test", "--json"]));
    expect(signer).toBeString();
    expect(json[1]).toEqual(shown);
    const t = (iso: string) => iso.slice(0, 19).replace("T", " ");
    expect(await stdout(["dkim", "list"])).toBe([
      "DOMAIN     SELECTOR  BITS  CREATED AT           DNS NAME",
      `b.test     mail-2    2048  ${t(json[0].created_at)}  mail-2._domainkey.b.test`,
      `chat.test  s1        2048  ${t(json[1].created_at)}  s1._domainkey.chat.test`,
      "",
    ].join("\n"));
    // One damaged key (a half-restored backup) hides none of the others.
    writeFileSync(join(dataDir, "dkim", "b.test", "active.json"), "{");
    const r = await ok(["dkim", "list"]);
    expect(r.stdout).toBe([
      "DOMAIN     SELECTOR  BITS  CREATED AT           DNS NAME",
      "b.test     -         -     -                    (unusable: see the warning)",
      `chat.test  s1        2048  ${t(json[1].created_at)}  s1._domainkey.chat.test`,
      "",
    ].join("\n"));
    expect(r.stderr).toStartWith("madmail: warning: cannot use the DKIM key of b.test: ");
    const damaged = JSON.parse((await ok(["dkim", "list", "--json"])).stdout);
    expect(damaged[0]).toEqual({ domain: "b.test", error: expect.stringContaining("cannot use the DKIM key of b.test") });
    expect(damaged[1]).toEqual(json[1]);
  });
});
