// DKIM signing of outbound mail: real samples signed with keys made as `madmail dkim generate`
// makes them, verified by mailauth (and by dkimpy, an independent implementation, when the
// Debian package python3-dkim is installed) against the TXT record as the CLI prints it.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { dkimVerify } from "mailauth/lib/dkim/verify";
import {
  OVERSIGNED_HEADERS, createDkimKey, formatTxtRecord, loadDkimSigner, readDkimKey, withoutBareCr, type DkimSignerOptions,
} from "../../src/delivery/dkim.ts";
import { startDkimThread } from "../../src/delivery/dkim-thread.ts";

const SAMPLES = resolve(import.meta.dir, "../fixtures/samples");
const DC = readFileSync(join(SAMPLES, "pass-deltachat-2.57-chat.eml")); // LF line endings
const GPG = readFileSync(join(SAMPLES, "pass-gnupg-2.2-encrypted-signed.eml")); // CRLF

let dataDir: string;
beforeEach(() => {
  dataDir = mkdtempSync(join(tmpdir(), "madmail-dkim-"));
});
afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

/** The TXT value a resolver would return for a record in the form the CLI prints. */
function parsePrintedRecord(line: string): { name: string; txt: string } {
  const m = /^(\S+)\. IN TXT \( ((?:"[^"]{0,255}" )+)\)$/.exec(line.trim());
  if (!m) throw new Error(`not a TXT record line: ${line}`);
  return { name: m[1]!, txt: [...m[2]!.matchAll(/"([^"]*)"/g)].map((x) => x[1]).join("") };
}

/** Makes a key for `domain` and returns its TXT record as printed, parsed back. */
async function keyFor(domain: string, selector = "sel", force = false) {
  await createDkimKey(dataDir, domain, { selector, force });
  return parsePrintedRecord(formatTxtRecord((await readDkimKey(dataDir, domain))!));
}

/** mailauth's verdict for the first signature, with DNS answered from `records`. */
async function verify(message: Uint8Array | string, records: Record<string, string>) {
  const lookups: string[] = [];
  const resolver = async (name: string, type: string) => {
    lookups.push(`${type} ${name}`);
    const txt = records[name];
    if (type !== "TXT" || txt === undefined) throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
    return [[txt]];
  };
  const r = await dkimVerify(Buffer.from(message), { resolver });
  const first = r.results[0]!;
  return { result: first.status.result, comment: first.status.comment, domain: first.signingDomain, selector: first.selector, lookups, count: r.results.length };
}

const text = (b: Uint8Array) => Buffer.from(b).toString("latin1");
const signatureOf = (signed: Uint8Array) => /^DKIM-Signature:[^]*?(?=\r?\n\S)/.exec(text(signed))![0];
const tag = (sig: string, name: string) => new RegExp(`[;\\s]${name}=([^;]*)`).exec(sig.replace(/\r?\n\s/g, " "))?.[1]?.trim();
const signer = (o?: DkimSignerOptions) => loadDkimSigner(dataDir, o);

describe("sign", () => {
  test("a Delta Chat message (LF) verifies against the printed record; the original bytes follow the new header", async () => {
    const rec = await keyFor("chat.test");
    expect(rec.name).toBe("sel._domainkey.chat.test");
    const signed = await signer().sign(DC, "chat.test");
    expect(await verify(signed, { [rec.name]: rec.txt })).toEqual({
      result: "pass", comment: undefined, domain: "chat.test", selector: "sel", lookups: ["TXT sel._domainkey.chat.test"], count: 1,
    });
    const sig = signatureOf(signed);
    expect(Buffer.from(signed.subarray(signed.length - DC.length)).equals(DC)).toBe(true);
    expect(text(signed).slice(0, signed.length - DC.length)).not.toContain("\r"); // the message's own LF style
    expect(tag(sig, "a")).toBe("rsa-sha256");
    expect(tag(sig, "c")).toBe("relaxed/relaxed");
    expect(tag(sig, "d")).toBe("chat.test");
    expect(tag(sig, "s")).toBe("sel");
    expect(tag(sig, "l")).toBeUndefined(); // the whole body, always
    const h = tag(sig, "h")!.split(":").map((x) => x.trim().toLowerCase());
    // Every outer header of the sample is signed, and From (among others) once more than it occurs.
    for (const name of ["content-type", "mime-version", "from", "to", "subject", "date", "message-id", "chat-version"]) {
      expect(h.filter((x) => x === name).length).toBe(2);
    }
    expect(h.filter((x) => x === "reply-to").length).toBe(1); // absent: listed once, so it cannot be added
    expect(new Set(h)).toEqual(new Set([...h.filter((x) => !OVERSIGNED_HEADERS.includes(x as never)), ...OVERSIGNED_HEADERS]));
  });

  test("a CRLF message gets a CRLF header and verifies", async () => {
    const rec = await keyFor("gpg.test");
    const signed = await signer().sign(GPG, "gpg.test");
    expect((await verify(signed, { [rec.name]: rec.txt })).result).toBe("pass");
    const head = text(signed).slice(0, signed.length - GPG.length);
    expect(head.endsWith("\r\n")).toBe(true);
    expect(head.replace(/\r\n/g, "")).not.toContain("\n");
  });

  test("LF-only input converted to CRLF afterwards (as an SMTP hop does) still verifies", async () => {
    const rec = await keyFor("chat.test");
    const signed = text(await signer().sign(DC, "chat.test"));
    expect((await verify(signed.replace(/\n/g, "\r\n"), { [rec.name]: rec.txt })).result).toBe("pass");
  });

  test("a message without body (no empty line) is signed with the hash of the empty body", async () => {
    const rec = await keyFor("chat.test");
    for (const msg of ["From: <a@chat.test>\nTo: <b@x.test>\nSubject: hi\n", "From: <a@chat.test>\r\nSubject: hi"]) {
      const signed = text(await signer().sign(Buffer.from(msg), "chat.test"));
      expect(signed.endsWith(msg)).toBe(true);
      expect(tag(signatureOf(Buffer.from(signed)), "bh")).toBe("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="); // SHA-256 of ""
      // mailauth's verifier, like its signer, needs the empty line to find the header's end
      // (without it: "none"); an empty body is the same body. dkimpy checks the bare form below.
      expect((await verify(signed.replace(/(\r?\n)?$/, "\r\n\r\n"), { [rec.name]: rec.txt })).result).toBe("pass");
    }
  });

  test("no From: header (also: an empty header section): left unsigned, not signed with h= that verifies nowhere", async () => {
    await keyFor("chat.test");
    for (const msg of ["\r\nHello, this is the body.\r\n", "Subject: hi\r\n\r\nbody\r\n"]) {
      expect(await signer().signatureFor(Buffer.from(msg), "chat.test")).toBeNull();
    }
  });

  test("a bare CR becomes CRLF before signing, as an SMTP client would send it: the signature holds on every transport", async () => {
    const rec = await keyFor("chat.test");
    const msg = Buffer.from("From: <a@chat.test>\r\nSubject: cr\r\n\r\nline1\rline2\r\n");
    const fixed = withoutBareCr(msg);
    expect(text(fixed)).toBe("From: <a@chat.test>\r\nSubject: cr\r\n\r\nline1\r\nline2\r\n");
    const signed = text(await signer().sign(fixed, "chat.test"));
    expect((await verify(signed, { [rec.name]: rec.txt })).result).toBe("pass");
    // Nothing to change: the same bytes, not a copy.
    expect(withoutBareCr(GPG)).toBe(GPG);
    expect(withoutBareCr(DC)).toBe(DC);
  });

  test("d= is the envelope domain even when From: names another domain", async () => {
    const rec = await keyFor("relay.test");
    const signed = await signer().sign(DC, "Relay.Test.");
    expect(await verify(signed, { [rec.name]: rec.txt })).toMatchObject({ result: "pass", domain: "relay.test" });
  });
});

describe("tampering breaks the signature", () => {
  // mailauth reports a body hash mismatch as "neutral" (its choice; RFC 6376 §6.1.3 calls it
  // PERMFAIL) and a header mismatch as "fail". Edits apply below the DKIM-Signature header.
  const BODY = { result: "neutral", comment: "body hash did not verify" };
  const HEADER = { result: "fail", comment: "bad signature" };
  const cases: [string, (m: string) => string, typeof BODY][] = [
    ["one body character", (m) => m.replace("wUcGABIBB0Cd", "wUcGABIBB0Ce"), BODY],
    ["a body line appended", (m) => m + "extra\n", BODY],
    ["the Subject", (m) => m.replace("Subject: [...]", "Subject: [..]"), HEADER],
    ["the From address", (m) => m.replace("From: <alice@chat.test>", "From: <mallory@chat.test>"), HEADER],
    ["the Chat-Version", (m) => m.replace("Chat-Version: 1.0", "Chat-Version: 2.0"), HEADER],
    ["a second From above the signed one (oversigned)", (m) => "From: <mallory@evil.test>\n" + m, HEADER],
    ["an added Reply-To (absent, oversigned)", (m) => m.replace("Subject:", "Reply-To: <mallory@evil.test>\nSubject:"), HEADER],
    ["a second Content-Type", (m) => m.replace("MIME-Version:", "Content-Type: text/plain\nMIME-Version:"), HEADER],
  ];
  test.each(cases)("%s", async (_, change, expected) => {
    const rec = await keyFor("chat.test");
    const signed = text(await signer().sign(DC, "chat.test"));
    const cut = signed.length - DC.length;
    const changed = signed.slice(0, cut) + change(signed.slice(cut));
    expect(changed).not.toBe(signed);
    expect(await verify(changed, { [rec.name]: rec.txt })).toMatchObject(expected);
  });

  test("but headers outside the list may be added in transit (Received, Return-Path, X-*)", async () => {
    const rec = await keyFor("chat.test");
    const signed = text(await signer().sign(DC, "chat.test"));
    const cut = signed.length - DC.length;
    const relayed = "Return-Path: <alice@chat.test>\nReceived: from x by y; Sat, 21 Nov 2026 07:21:18 +0000\n" +
      signed.slice(0, cut) + signed.slice(cut).replace("Chat-Version:", "X-Spam: no\nChat-Version:");
    expect((await verify(relayed, { [rec.name]: rec.txt })).result).toBe("pass");
  });

  test("a key other than the published one fails", async () => {
    await keyFor("chat.test");
    const other = mkdtempSync(join(tmpdir(), "madmail-dkim-other-"));
    try {
      await createDkimKey(other, "chat.test", { selector: "sel" });
      const wrong = (await readDkimKey(other, "chat.test"))!;
      const signed = await signer().sign(DC, "chat.test");
      expect((await verify(signed, { [wrong.dnsName]: wrong.dnsTxt })).result).toBe("fail");
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});

describe("keys", () => {
  test.each(["other.test", "", "<>", "../dkim", "chat.test/../x", "[1.2.3.4]"])("sender domain %p without key: the same bytes back", async (d) => {
    await keyFor("chat.test");
    expect(await signer().sign(DC, d)).toBe(DC);
  });

  test("a key made while the signer runs is used for the next message", async () => {
    const s = signer();
    expect(await s.sign(DC, "chat.test")).toBe(DC);
    const rec = await keyFor("chat.test");
    const signed = await s.sign(DC, "chat.test");
    expect((await verify(signed, { [rec.name]: rec.txt })).result).toBe("pass");
  });

  test("a replaced key is picked up after the recheck interval, not before", async () => {
    await keyFor("chat.test", "old");
    const cached = signer(); // 10 s
    const eager = signer({ recheckMs: 0 });
    expect(tag(signatureOf(await cached.sign(DC, "chat.test")), "s")).toBe("old");
    expect(tag(signatureOf(await eager.sign(DC, "chat.test")), "s")).toBe("old");
    const rec = await keyFor("chat.test", "new", true);
    expect(tag(signatureOf(await cached.sign(DC, "chat.test")), "s")).toBe("old");
    const fresh = await eager.sign(DC, "chat.test");
    expect(tag(signatureOf(fresh), "s")).toBe("new");
    expect((await verify(fresh, { [rec.name]: rec.txt })).result).toBe("pass");
  });

  test("the same selector regenerated with --force is noticed too (new file, same name)", async () => {
    await keyFor("chat.test", "sel");
    const s = signer({ recheckMs: 0 });
    await s.sign(DC, "chat.test");
    const rec = await keyFor("chat.test", "sel", true);
    expect((await verify(await s.sign(DC, "chat.test"), { [rec.name]: rec.txt })).result).toBe("pass");
  });

  test("a damaged key file: the message goes out unsigned instead of being held", async () => {
    await keyFor("chat.test");
    writeFileSync(join(dataDir, "dkim", "chat.test", "sel.key"), "not a key\n");
    expect(await signer().sign(DC, "chat.test")).toBe(DC);
  });
});

// dkimpy (Debian python3-dkim) as a second, independent verifier, with the same TXT record.
const PYTHON = ["/usr/bin/python3", "python3"].find((p) => {
  try {
    return Bun.spawnSync([p, "-c", "import dkim"], { stderr: "ignore", stdout: "ignore" }).exitCode === 0;
  } catch {
    return false;
  }
});
const DKIMPY = `
import dkim, sys
txt = sys.argv[1].encode()
ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: txt if name == sys.argv[2].encode() + b"." else None)
print("pass" if ok else "fail")
`;

describe.skipIf(!PYTHON)("dkimpy agrees (python3-dkim)", () => {
  const dkimpy = (message: Uint8Array | string, rec: { name: string; txt: string }) =>
    Bun.spawnSync([PYTHON!, "-c", DKIMPY, rec.txt, rec.name], { stdin: Buffer.from(message) }).stdout.toString().trim();

  test("LF and CRLF samples pass; a second From: or an edited body fails", async () => {
    const rec = await keyFor("chat.test");
    const s = signer();
    const dc = text(await s.sign(DC, "chat.test"));
    expect(dkimpy(dc, rec)).toBe("pass");
    expect(dkimpy(await s.sign(GPG, "chat.test"), rec)).toBe("pass");
    expect(dkimpy("From: <mallory@evil.test>\n" + dc, rec)).toBe("fail");
    expect(dkimpy(dc + "extra\n", rec)).toBe("fail");
  });

  test("a message without body verifies as it is (no empty line added)", async () => {
    const rec = await keyFor("chat.test");
    for (const msg of ["From: <a@chat.test>\nTo: <b@x.test>\nSubject: hi\n", "From: <a@chat.test>\r\nSubject: hi"]) {
      expect(dkimpy(await signer().sign(Buffer.from(msg), "chat.test"), rec)).toBe("pass");
    }
  });
});

describe("signing thread (what serve uses)", () => {
  test("LF and CRLF messages signed on the thread verify; the caller's bytes stay as they were; no key: unchanged", async () => {
    const rec = await keyFor("chat.test");
    const thread = startDkimThread(dataDir, { logFormat: "human", level: 1 });
    try {
      const dcCopy = Buffer.from(DC);
      const signed = await Promise.all([thread.sign(DC, "chat.test"), thread.sign(GPG, "chat.test"), thread.sign(DC, "nokey.test")]);
      expect(await verify(signed[0]!, { [rec.name]: rec.txt })).toMatchObject({ result: "pass", domain: "chat.test", selector: "sel" });
      expect(await verify(signed[1]!, { [rec.name]: rec.txt })).toMatchObject({ result: "pass", domain: "chat.test", selector: "sel" });
      expect(Buffer.from(signed[0]!.subarray(signed[0]!.length - DC.length)).equals(DC)).toBe(true);
      expect(DC.equals(dcCopy)).toBe(true);
      expect(signed[2]).toBe(DC);
    } finally {
      thread.close();
    }
  });

  test("after close, signing goes on in the calling thread", async () => {
    const rec = await keyFor("chat.test");
    const thread = startDkimThread(dataDir, { logFormat: "human", level: 1 });
    const pending = thread.sign(DC, "chat.test");
    thread.close();
    const [before, after] = [await pending, await thread.sign(DC, "chat.test")];
    expect(await verify(before, { [rec.name]: rec.txt })).toMatchObject({ result: "pass" });
    expect(await verify(after, { [rec.name]: rec.txt })).toMatchObject({ result: "pass" });
  });
});
