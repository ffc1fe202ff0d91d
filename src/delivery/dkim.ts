// DKIM (RFC 6376) for outbound mail: the keys on disk and the signer that the queue runs over
// every message before it leaves. Chatmail relays reject federation mail without a valid
// signature, so every local domain that sends should have a key (`madmail dkim generate`).
//
// Layout under the data directory (the folder of the state file):
//   dkim/                          0700
//   dkim/<domain>/                 0700
//   dkim/<domain>/<selector>.key   0600  RSA private key, PKCS#8 PEM
//   dkim/<domain>/active.json      0600  {"selector": "...", "created_at": "ISO 8601"}
//   dkim/<domain>/retired          0600  selectors of replaced keys, one per line (their DNS
//                                        records may still be published: never used again)
// active.json names the one key that signs for the domain and is the commit point: the key file
// is complete on disk (written to a temporary file, fsynced, then renamed or linked into place)
// before active.json, written the same way, names it; a reader never sees a selector without its key. Both are plain files so that backups and `ls` explain themselves.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { promises as fsp } from "node:fs";
import { join } from "node:path";
import { MadmailError, conflict } from "../errors.ts";
import { log } from "../log.ts";
import { normaliseDomain } from "../util/names.ts";
import { startedHere } from "../inbound/types.ts";
import { importRsaSigningKey, type RsaSigningKey } from "./rsa-sign.ts";

export const DKIM_DIR = "dkim";
/** One DNS label, lower-case: the selector names `<selector>._domainkey.<domain>`. */
export const SELECTOR_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** RFC 8301 §3.2: signers SHOULD use at least 2048 bits. */
export const DEFAULT_BITS = 2048;
/** How often a cached key is checked for replacement on disk. @default 10000 */
export const RECHECK_MS = 10_000;

/**
 * Headers covered by the signature when present: RFC 6376 §5.4.1's list (OpenDKIM's default)
 * plus what chatmail relays add (Autocrypt, Content-Type) and the headers Delta Chat sends in
 * the clear (Chat-Version, Secure-Join, Autocrypt-Setup-Message).
 */
export const SIGNED_HEADERS = [
  "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version", "content-type",
  "content-transfer-encoding", "in-reply-to", "references", "resent-date", "resent-from", "resent-sender", "resent-to",
  "resent-cc", "list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
  "autocrypt", "autocrypt-setup-message", "chat-version", "secure-join", "secure-join-invitenumber", "auto-submitted",
] as const;

/**
 * Headers listed in h= once more than they occur (RFC 6376 §8.15): a copy added in transit,
 * such as a second From: or Autocrypt: above the signed one, breaks the signature instead of
 * riding on it. The chatmail relay's OpenDKIM OversignHeaders, plus the MIME and chat headers.
 */
export const OVERSIGNED_HEADERS = [
  "from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
  "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
  "list-archive", "autocrypt", "message-id", "mime-version", "content-type", "chat-version",
] as const;

export interface DkimKeyInfo {
  domain: string;
  selector: string;
  keyPath: string;
  bits: number;
  /** ISO 8601 */
  createdAt: string;
  /** `<selector>._domainkey.<domain>`, without the final dot */
  dnsName: string;
  /** The TXT value, unsplit: `v=DKIM1; k=rsa; p=...` */
  dnsTxt: string;
}

/** `madmail` + the UTC year and month: a key replaced in a later month gets a new DNS name, so both records can be published during the change. */
export function defaultSelector(now = new Date()): string {
  return `madmail${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
}

/** The zone-file line: strings of at most 255 characters each (RFC 1035 §3.3.14), in one TXT record. */
export function formatTxtRecord(info: Pick<DkimKeyInfo, "dnsName" | "dnsTxt">): string {
  const at = info.dnsTxt.indexOf("p=");
  const parts = [info.dnsTxt.slice(0, at), ...(info.dnsTxt.slice(at).match(/.{1,255}/g) ?? [])];
  return `${info.dnsName}. IN TXT ( ${parts.map((p) => `"${p}"`).join(" ")} )`;
}

/** The active key of a domain, or null when it has none. */
export async function readDkimKey(dataDir: string, domain: string): Promise<DkimKeyInfo | null> {
  try {
    return (await loadKey(dataDir, domain))?.info ?? null;
  } catch (err) {
    throw new MadmailError("config", `cannot use the DKIM key of ${domain}: ${(err as Error).message}; ` +
      `make a new one with \`madmail dkim generate ${domain} --force\``, { cause: err });
  }
}

/** Selectors of the domain's replaced keys (`retired`), oldest first. */
export async function retiredSelectors(dataDir: string, domain: string): Promise<string[]> {
  const text = await fsp.readFile(join(dataDir, DKIM_DIR, domain, RETIRED_FILE), "utf8").catch(ignoreMissing(""));
  return text.split("\n").map((l) => l.trim()).filter((l) => SELECTOR_PATTERN.test(l));
}

const RETIRED_FILE = "retired";

/** The active keys of all domains, by domain; a domain whose key cannot be read, with the reason. */
export async function listDkimKeys(dataDir: string): Promise<(DkimKeyInfo | { domain: string; error: string })[]> {
  const names = await fsp.readdir(join(dataDir, DKIM_DIR)).catch(ignoreMissing([] as string[]));
  const keys = await Promise.all(names.filter((n) => normaliseDomain(n) === n).sort().map((domain) =>
    readDkimKey(dataDir, domain).catch((err: Error) => ({ domain, error: err.message }))));
  return keys.filter((k) => k !== null);
}

export interface CreateKeyOptions {
  selector: string;
  /** @default 2048 */
  bits?: number;
  /** Replace the domain's active key instead of refusing. */
  force?: boolean;
  now?: Date;
}

/**
 * Makes a key and makes it the domain's active one. Refuses (conflict) when the domain has a key
 * and `force` is not set. The caller validates domain (normalised, local) and selector.
 */
export async function createDkimKey(dataDir: string, domain: string, opts: CreateKeyOptions): Promise<{ info: DkimKeyInfo; replaced: DkimKeyInfo | null }> {
  // A damaged key (unreadable active.json or key file) can only be replaced.
  const previous = await readDkimKey(dataDir, domain).catch((err) => {
    if (opts.force) return null;
    throw err;
  });
  if (previous && !opts.force) throw exists(previous);
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: opts.bits ?? DEFAULT_BITS });
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  const dir = await makeKeyDir(dataDir, domain);
  const keyPath = join(dir, `${opts.selector}.key`);
  const active = JSON.stringify({ selector: opts.selector, created_at: (opts.now ?? new Date()).toISOString() }) + "\n";
  if (opts.force) {
    await writeAtomic(keyPath, pem, "replace");
    if (previous && previous.selector !== opts.selector) {
      // Before active.json moves on: a crash in between leaves the old key active and its
      // selector listed, which only costs a name.
      const retired = await retiredSelectors(dataDir, domain);
      await writeAtomic(join(dir, RETIRED_FILE), [...retired, previous.selector].join("\n") + "\n", "replace");
    }
    await writeAtomic(join(dir, "active.json"), active, "replace");
    if (previous && previous.keyPath !== keyPath) await fsp.rm(previous.keyPath, { force: true });
  } else {
    // Exclusive creation at each step: of two runs racing for the domain, one wins, the other
    // changes nothing (and removes the key file it made).
    if (!(await writeAtomic(keyPath, pem, "create"))) throw exists(await readDkimKey(dataDir, domain), keyPath);
    if (!(await writeAtomic(join(dir, "active.json"), active, "create"))) {
      await fsp.rm(keyPath, { force: true });
      throw exists(await readDkimKey(dataDir, domain));
    }
  }
  await syncDir(dir);
  await syncDir(join(dataDir, DKIM_DIR));
  const info = await readDkimKey(dataDir, domain);
  if (!info) throw new Error(`DKIM key for ${domain} vanished while it was written`);
  return { info, replaced: previous };
}

/**
 * The domain whose key signs a queued message, or null when it leaves unsigned: only mail that
 * started here (a logged-in user on submission, `madmail send`) carries our signature. Mail
 * relayed for others (relay.domains, an exchanger partner, a pulled message) keeps what it
 * came with, also when its envelope sender names a local domain: anyone can claim that.
 */
export function signingDomain(message: { door: string; mail_from: string }): string | null {
  if (!startedHere(message)) return null;
  const at = message.mail_from.lastIndexOf("@");
  return at > 0 ? message.mail_from.slice(at + 1) : null;
}

export interface DkimSigner {
  /**
   * Returns the message with a DKIM-Signature header prepended (rsa-sha256, relaxed/relaxed,
   * d=senderDomain), in the message's own line-ending style; unchanged when that domain has no
   * key or the key cannot be used (logged).
   */
  sign(message: Uint8Array, senderDomain: string): Promise<Uint8Array>;
}

export interface DkimHeaderSigner extends DkimSigner {
  /** The DKIM-Signature header field for `message` (with its line ending), or null when it goes out unsigned. */
  signatureFor(message: Uint8Array, senderDomain: string): Promise<string | null>;
  /** Whether mail from this domain is signed: it has a usable key. */
  hasKey(senderDomain: string): Promise<boolean>;
}

/**
 * The message with every bare CR made a CRLF (RFC 5322 forbids bare CR; SMTP clients, ours
 * too, rewrite it on the wire, after the signature was made over the original); the message
 * itself when it has none.
 */
export function withoutBareCr(message: Uint8Array): Uint8Array {
  const bare: number[] = [];
  for (let i = message.indexOf(0x0d); i !== -1; i = message.indexOf(0x0d, i + 1)) if (message[i + 1] !== 0x0a) bare.push(i);
  if (!bare.length) return message;
  const out = new Uint8Array(message.length + bare.length);
  let from = 0;
  let to = 0;
  for (const i of bare) {
    out.set(message.subarray(from, i + 1), to);
    to += i + 1 - from;
    out[to++] = 0x0a;
    from = i + 1;
  }
  out.set(message.subarray(from), to);
  return out;
}

/** `message` with `header` (latin1, already in the message's line-ending style) in front. */
export function prependHeader(message: Uint8Array, header: string | null): Uint8Array {
  if (header === null) return message;
  const head = Buffer.from(header, "latin1");
  const out = new Uint8Array(head.length + message.length);
  out.set(head, 0);
  out.set(message, head.length);
  return out;
}

export interface DkimSignerOptions {
  /** Milliseconds between checks of a cached key against the files. @default 10000 */
  recheckMs?: number;
  /** Log a line when a key is loaded (which key, which crypto). @default true */
  announce?: boolean;
}

/**
 * The signer for mail leaving this server. `senderDomain` is the envelope MAIL FROM domain: d=
 * is that domain even when the From: header names another one. (Chatmail relays ignore a
 * signature whose d= differs from the From: domain, so such mail is refused there; keeping
 * From: and MAIL FROM aligned is the job of submission policy, not of the signer.) A bounce
 * (MAIL FROM <>) should pass the local domain it is sent from.
 *
 * Keys load lazily and stay cached; a cached key is compared with the files (inode, mtime,
 * size) at most every `recheckMs`, and a domain without a cached key is looked up on each
 * message, so a key made by `madmail dkim generate` while the server runs is used at once
 * and a replaced one within 10 s.
 */
export function loadDkimSigner(dataDir: string, options: DkimSignerOptions = {}): DkimHeaderSigner {
  const recheckMs = options.recheckMs ?? RECHECK_MS;
  // Imported once per key, not parsed again for every message.
  const cache = new Map<string, { stamp: string; checkedAt: number; selector: string; key: RsaSigningKey }>();

  async function keyFor(domain: string) {
    const now = Date.now();
    const hit = cache.get(domain);
    if (hit && now - hit.checkedAt < recheckMs) return hit;
    try {
      const before = await stampOf(dataDir, domain, hit?.selector);
      if (hit && before === hit.stamp) {
        hit.checkedAt = now;
        return hit;
      }
      const loaded = before.startsWith("-") ? null : await loadKey(dataDir, domain);
      if (!loaded) {
        cache.delete(domain);
        return null;
      }
      const after = await stampOf(dataDir, domain, loaded.info.selector);
      // active.json replaced while we read: use what we got once, load again on the next message.
      const settled = after.split("|")[0] === before.split("|")[0];
      const key = await importRsaSigningKey(loaded.key);
      const entry = { stamp: settled ? after : "", checkedAt: settled ? now : 0, selector: loaded.info.selector, key };
      if (options.announce !== false) {
        log.withTag("dkim").info(`signing for ${domain} with selector ${entry.selector} (${key.backend === "openssl" ? "system OpenSSL" : "WebCrypto"})`);
      }
      cache.set(domain, entry);
      return entry;
    } catch (err) {
      cache.delete(domain);
      log.withTag("dkim").warn(`cannot use the DKIM key of ${domain}, sending unsigned: ${(err as Error).message}`);
      return null;
    }
  }

  async function signatureFor(message: Uint8Array, senderDomain: string): Promise<string | null> {
    const domain = normaliseDomain(senderDomain);
    const entry = domain && (await keyFor(domain));
    if (!domain || !entry) return null;
    try {
      const header = await signatureHeader(message, domain, entry.selector, entry.key);
      return usesCrlf(message) ? header : header.replace(/\r\n/g, "\n");
    } catch (err) {
      log.withTag("dkim").warn(`DKIM signing for ${domain} failed, sending unsigned: ${(err as Error).message}`);
      return null;
    }
  }

  return {
    signatureFor,
    async hasKey(senderDomain) {
      const domain = normaliseDomain(senderDomain);
      return !!domain && !!(await keyFor(domain));
    },
    async sign(message, senderDomain) {
      return prependHeader(message, await signatureFor(message, senderDomain));
    },
  };
}

// ---------------------------------------------------------------------------------------------

interface ParsedHeader {
  key: string | null;
  casedKey?: string;
}

type SignerClass = new (options: object) => {
  signatureHeaders: string[];
  errors: { err: Error }[];
  messageHeaders(headers: { parsed: ParsedHeader[] }): Promise<void>;
  nextChunk(body: Buffer): Promise<void>;
  finalChunk(): Promise<void>;
  finalize(): Promise<void>;
};

/** The parts of DkimSigner's state that our finalize() reads. */
interface SignerState {
  headers: { parsed: ParsedHeader[] };
  headerList: string;
  signTime: Date;
  signatureData: { signingDomain: string; selector: string; privateKey: RsaSigningKey; maxBodyLength?: number }[];
  bodyHashes: Map<string, { hash?: string }>;
  signatureHeaders: string[];
}

interface MailauthTools {
  parseHeaders(header: Buffer): { parsed: ParsedHeader[] };
  getSigningHeaderLines(parsed: ParsedHeader[], fieldNames: string): unknown;
  formatSignatureHeaderLine(type: "DKIM", values: Record<string, unknown>, folded: boolean): string;
}

interface MailauthHeader {
  generateCanonicalizedHeader(type: "DKIM", lines: unknown, options: object): { canonicalizedHeader: Uint8Array<ArrayBuffer>; dkimHeaderOpts: Record<string, unknown> };
}

let signerClass: Promise<{ Signer: SignerClass; parseHeaders: MailauthTools["parseHeaders"] }> | undefined;

/**
 * mailauth's DkimSigner (what its dkimSign() wraps), loaded on first use: mailauth is heavy
 * and the CLI imports this module for the key functions. It does the canonicalisation, the body
 * hash and the header format; three things are ours:
 * - headerList: its types say string[], but the code honours only a colon-separated string
 *   (an array silently falls back to its default list);
 * - oversigning: it lists each present header once. Names appended to the h= entry of the
 *   topmost signed header come after every real instance of each name, so they bind to no
 *   header and add nothing to the hash (RFC 6376 §5.4.2) — exactly what an oversigned name is;
 * - the RSA operation: mailauth parses the PEM again for every message and signs with Bun's
 *   node:crypto (0.6 ms). We sign with a key loaded once, by the system's OpenSSL when it is
 *   there (0.25 ms), else WebCrypto (see rsa-sign.ts).
 */
function loadSignerClass(): Promise<{ Signer: SignerClass; parseHeaders: MailauthTools["parseHeaders"] }> {
  signerClass ??= (async () => {
    const [{ DkimSigner }, tools, header] = (await Promise.all([
      // @ts-expect-error mailauth ships no type declarations for its internal modules
      import("mailauth/lib/dkim/dkim-signer.js"),
      // @ts-expect-error as above
      import("mailauth/lib/tools.js"),
      // @ts-expect-error as above
      import("mailauth/lib/dkim/header/index.js"),
    ])) as [{ DkimSigner: SignerClass }, MailauthTools, MailauthHeader];
    const signed = new Set<string>(SIGNED_HEADERS);
    const Signer = class OversigningSigner extends DkimSigner {
      override messageHeaders(headers: { parsed: ParsedHeader[] }): Promise<void> {
        const top = headers.parsed.find((h) => h.key !== null && signed.has(h.key));
        if (top) top.casedKey = [top.casedKey, ...OVERSIGNED_HEADERS].join(": ");
        return super.messageHeaders(headers);
      }

      // Replaces DkimSigner.finalize for the one signature we ask for (rsa-sha256, relaxed/relaxed).
      override async finalize(this: SignerState): Promise<void> {
        const data = this.signatureData[0]!;
        const lines = tools.getSigningHeaderLines(this.headers.parsed, this.headerList);
        const { canonicalizedHeader, dkimHeaderOpts } = header.generateCanonicalizedHeader("DKIM", lines, {
          ...data,
          privateKey: undefined,
          algorithm: "rsa-sha256",
          canonicalization: "relaxed/relaxed",
          signTime: this.signTime,
          bodyHash: this.bodyHashes.get(`relaxed:sha256:${data.maxBodyLength}`)?.hash ?? null,
        });
        const signature = await data.privateKey.sign(canonicalizedHeader);
        dkimHeaderOpts.b = Buffer.from(signature).toString("base64");
        this.signatureHeaders.push(tools.formatSignatureHeaderLine("DKIM", dkimHeaderOpts, true));
      }
    };
    return { Signer, parseHeaders: tools.parseHeaders };
  })();
  return signerClass;
}

/** `DKIM-Signature: ...\r\n`, folded with CRLF. */
async function signatureHeader(message: Uint8Array, domain: string, selector: string, privateKey: RsaSigningKey): Promise<string> {
  const { Signer, parseHeaders } = await loadSignerClass();
  const signer = new Signer({
    canonicalization: "relaxed/relaxed",
    algorithm: "rsa-sha256",
    signTime: new Date(),
    headerList: SIGNED_HEADERS.join(":"),
    signatureData: [{ signingDomain: domain, selector, privateKey }],
  });
  // Canonicalisation works on CRLF lines either way; converting first is ten times faster than
  // letting mailauth do it (it handles each bare-LF line as a chunk of its own).
  let input = toCrlf(Buffer.from(message.buffer, message.byteOffset, message.byteLength));
  // Without the empty line that ends the header the parser never reaches the body and signs
  // nothing; an absent body and an empty one canonicalise alike (RFC 6376 §3.4.4).
  if (input.indexOf("\r\n\r\n") === -1) input = Buffer.concat([input, Buffer.from(input.at(-1) === 0x0a ? "\r\n" : "\r\n\r\n")]);
  // The signer is a Writable that finds the end of the header byte by byte and re-checks every
  // line ending; the input is whole and in CRLF already, so it gets the header and the body
  // directly, at the steps where its stream would hand them over.
  // A message that starts with its empty line has no header at all.
  const end = input[0] === 0x0d && input[1] === 0x0a ? 2 : input.indexOf("\r\n\r\n") + 4;
  const headers = parseHeaders(input.subarray(0, end));
  // RFC 6376 §5.4: From: must be signed; a signature over a message without one verifies nowhere.
  if (!headers.parsed.some((h) => h.key === "from")) throw new Error("the message has no From: header for the signature to cover");
  await signer.messageHeaders(headers);
  await signer.nextChunk(input.subarray(end));
  await signer.finalChunk();
  if (signer.errors.length) throw signer.errors[0]!.err;
  if (!signer.signatureHeaders.length) throw new Error("no signature produced (no header found)");
  return signer.signatureHeaders[0]! + "\r\n";
}

const CRLF = Buffer.from("\r\n");

/** Bare LF -> CRLF; the input itself when there is none. */
function toCrlf(input: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = input.indexOf(0x0a); i !== -1; i = input.indexOf(0x0a, i + 1)) {
    if (i > 0 && input[i - 1] === 0x0d) continue;
    parts.push(input.subarray(start, i), CRLF);
    start = i + 1;
  }
  if (!parts.length) return input;
  parts.push(input.subarray(start));
  return Buffer.concat(parts);
}

/** The style of the first line ending decides: Delta Chat's stored mail is LF-only. */
function usesCrlf(message: Uint8Array): boolean {
  const lf = message.indexOf(0x0a);
  return lf > 0 && message[lf - 1] === 0x0d;
}

async function loadKey(dataDir: string, domain: string): Promise<{ info: DkimKeyInfo; key: KeyObject } | null> {
  const dir = join(dataDir, DKIM_DIR, domain);
  const text = await fsp.readFile(join(dir, "active.json"), "utf8").catch(ignoreMissing(null));
  if (text === null) return null;
  const active = JSON.parse(text) as { selector?: unknown; created_at?: unknown };
  const selector = String(active.selector);
  if (!SELECTOR_PATTERN.test(selector)) throw new Error(`${join(dir, "active.json")}: invalid selector ${JSON.stringify(active.selector)}`);
  const keyPath = join(dir, `${selector}.key`);
  const pem = await fsp.readFile(keyPath);
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== "rsa") throw new Error(`${keyPath}: not an RSA key`);
  const spki = createPublicKey(key).export({ type: "spki", format: "der" }).toString("base64");
  const info: DkimKeyInfo = {
    domain,
    selector,
    keyPath,
    bits: key.asymmetricKeyDetails?.modulusLength ?? 0,
    createdAt: String(active.created_at),
    dnsName: `${selector}._domainkey.${domain}`,
    dnsTxt: `v=DKIM1; k=rsa; p=${spki}`,
  };
  return { info, key };
}

/** Changes when active.json or the key file it names is replaced or edited. */
async function stampOf(dataDir: string, domain: string, selector: string | undefined): Promise<string> {
  const dir = join(dataDir, DKIM_DIR, domain);
  const files = [join(dir, "active.json"), ...(selector ? [join(dir, `${selector}.key`)] : [])];
  const stats = await Promise.all(files.map((f) => fsp.stat(f).catch(ignoreMissing(null))));
  return stats.map((s) => (s ? `${s.ino}:${s.mtimeMs}:${s.size}` : "-")).join("|");
}

async function makeKeyDir(dataDir: string, domain: string): Promise<string> {
  const top = join(dataDir, DKIM_DIR);
  const dir = join(top, domain);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  // Also when they existed before: they hold private keys.
  await fsp.chmod(top, 0o700);
  await fsp.chmod(dir, 0o700);
  return dir;
}

/**
 * Writes via a temporary file in the same directory, fsynced before it takes the final name:
 * "replace" renames over the old file, "create" links it in only if the name is free (returns
 * false when it is taken). Mode 0600 from creation, never wider.
 */
async function writeAtomic(path: string, data: string, how: "replace" | "create"): Promise<boolean> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const fh = await fsp.open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    if (how === "replace") {
      await fsp.rename(tmp, path);
      return true;
    }
    await fsp.link(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    await fsp.rm(tmp, { force: true });
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function exists(current: DkimKeyInfo | null, keyPath?: string) {
  return current
    ? conflict(`"${current.domain}" already has a DKIM key (selector ${current.selector}, created ${current.createdAt}); ` +
        "replace it with --force, then publish the new DNS record")
    : conflict(`key file ${keyPath} already exists; choose another --selector or replace it with --force`);
}

function ignoreMissing<T>(value: T): (err: unknown) => T {
  return (err) => {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return value;
    throw err;
  };
}
