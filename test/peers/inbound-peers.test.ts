// madmail's inbound doors against real third-party peers: swaks (SMTP and LMTP, STARTTLS),
// a throw-away Postfix relaying a domain to madmail's LMTP, and Dovecot reading the Maildir.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { freePort, havePeers, imapFetch, mailOwner, makeCert, peerDir, startDovecot, startPostfix, swaks } from "../helpers/peers.ts";
import { startServe, type ServerHandle } from "../helpers/server.ts";

const have = havePeers();
const SAMPLE = resolve(import.meta.dir, "../fixtures/samples/pass-deltachat-2.57-chat.eml");
const PLAIN = resolve(import.meta.dir, "../fixtures/samples/fail-plaintext-unencrypted.eml");

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A madmail whose Maildirs live in a directory Dovecot (nobody) can reach, with TLS. */
async function startMadmail(): Promise<{ s: ServerHandle; mailRoot: string; tls: { cert: string; key: string } }> {
  const root = peerDir("mm");
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const tls = await makeCert(join(root, "tls"), "mx.chat.test");
  const mailRoot = join(root, "mail");
  // An existing mail root keeps its mode: Dovecot (the mail user) must traverse it.
  mkdirSync(mailRoot, { mode: 0o755 });
  const owner = mailOwner();
  const s = await startServe({
    setup: [
      ["init", "--domain", "chat.test"],
      ["user", "add", "bob@chat.test"],
      ["user", "add", "carol@chat.test"],
      ["config", "set", "tls.cert", tls.cert],
      ["config", "set", "tls.key", tls.key],
      ["config", "set", "mail_root", mailRoot],
      ["config", "set", "mail.uid", String(owner.uid)],
      ["config", "set", "mail.gid", String(owner.gid)],
    ],
  });
  cleanups.push(async () => {
    await s.stop();
    s.box.cleanup();
  });
  return { s, mailRoot, tls };
}

const newFiles = (mailRoot: string, address: string) => {
  try {
    return readdirSync(join(mailRoot, address, "new"));
  } catch {
    return [];
  }
};

describe.skipIf(!have.swaks || !have.openssl)("swaks against madmail", async () => {
  test("SMTP with STARTTLS: encrypted mail delivered, plaintext refused with 523", async () => {
    const { s, mailRoot } = await startMadmail();
    const ok = await swaks(["--server", `127.0.0.1:${s.smtpPort}`, "--tls", "--from", "alice@chat.test", "--to", "bob@chat.test", "--data", `@${SAMPLE}`]);
    expect(ok.out).toContain("=== TLS started with cipher");
    expect(ok.out).toMatch(/<~ {2}250 2\.0\.0 Ok/);
    expect(ok.code).toBe(0);
    expect(newFiles(mailRoot, "bob@chat.test").length).toBe(1);
    // Files belong to the mail user so Dovecot can read and move them.
    const f = join(mailRoot, "bob@chat.test", "new", newFiles(mailRoot, "bob@chat.test")[0]!);
    expect(statSync(f).uid).toBe(mailOwner().uid);

    const bad = await swaks(["--server", `127.0.0.1:${s.smtpPort}`, "--tls", "--from", "x@b.test", "--to", "bob@chat.test", "--data", `@${PLAIN}`]);
    expect(bad.code).not.toBe(0);
    expect(bad.out).toContain("523 5.7.1 Encryption Needed: Invalid Unencrypted Mail");
    expect(newFiles(mailRoot, "bob@chat.test").length).toBe(1);
  });

  test("LMTP with STARTTLS: per-recipient answers, unknown user refused at RCPT", async () => {
    const { s, mailRoot } = await startMadmail();
    const ok = await swaks(["--protocol", "LMTP", "--server", `127.0.0.1:${s.lmtpPort}`, "--tls", "--from", "a@b.test", "--to", "bob@chat.test,carol@chat.test", "--data", `@${SAMPLE}`]);
    expect(ok.out).toContain("=== TLS started with cipher");
    expect(ok.code).toBe(0);
    expect(newFiles(mailRoot, "bob@chat.test").length).toBe(1);
    expect(newFiles(mailRoot, "carol@chat.test").length).toBe(1);
    const ghost = await swaks(["--protocol", "LMTP", "--server", `127.0.0.1:${s.lmtpPort}`, "--from", "a@b.test", "--to", "ghost@chat.test", "--quit-after", "RCPT"]);
    expect(ghost.code).not.toBe(0);
    expect(ghost.out).toContain("550 5.1.1 User unknown");
  });
});

describe.skipIf(!have.postfix || !have.swaks)("Postfix in front of madmail (transport_maps -> LMTP)", () => {
  test("multi-recipient relay; an unknown user is rejected at RCPT by reject_unverified_recipient", async () => {
    const { s, mailRoot } = await startMadmail();
    // The transport line is exactly what `madmail mta postfix-maps` prints for this server.
    await s.box.run(["config", "set", "listen.lmtp", `127.0.0.1:${s.lmtpPort}`]);
    const maps = (await s.box.run(["mta", "postfix-maps"])).stdout.trim();
    expect(maps).toBe(`chat.test lmtp:[127.0.0.1]:${s.lmtpPort}`);
    const [domain, transport] = maps.split(" ") as [string, string];
    const smtpPort = await freePort();
    const dir = peerDir("pf");
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const pf = await startPostfix({ dir, smtpPort, relayDomains: { [domain]: transport }, extra: { smtpd_recipient_restrictions: "reject_unverified_recipient" } });
    cleanups.push(() => pf.stop());

    const r = await swaks(["--server", `127.0.0.1:${smtpPort}`, "--from", "alice@remote.test", "--to", "bob@chat.test,ghost@chat.test,carol@chat.test", "--data", `@${SAMPLE}`]);
    expect(r.out).toMatch(/550 5\.1\.1 <ghost@chat\.test>: Recipient address rejected/);
    expect(r.out).toMatch(/<- {2}250 2\.0\.0 Ok: queued/);
    await pf.waitForLog(/to=<bob@chat\.test>.*status=sent/, 20_000);
    await pf.waitForLog(/to=<carol@chat\.test>.*status=sent/, 20_000);
    expect(newFiles(mailRoot, "bob@chat.test").length).toBe(1);
    expect(newFiles(mailRoot, "carol@chat.test").length).toBe(1);
    expect(newFiles(mailRoot, "ghost@chat.test").length).toBe(0);
  }, 60_000);
});

describe.skipIf(!have.dovecot)("Dovecot reads what madmail delivered", () => {
  test("a message posted to /mxdeliv shows up over IMAP", async () => {
    const { s, mailRoot } = await startMadmail();
    const body = await Bun.file(SAMPLE).bytes();
    const r = await fetch(`${s.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "alice@remote.test", "X-Mail-To": "carol@chat.test" }, body });
    expect(r.status).toBe(200);
    const dir = peerDir("dc");
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const owner = mailOwner();
    const imapPort = await freePort();
    const dc = await startDovecot({ dir, imapPort, mailRoot, users: [{ address: "carol@chat.test", password: "pw" }], uid: owner.uid, gid: owner.gid });
    cleanups.push(() => dc.stop());
    const got = await imapFetch(imapPort, "carol@chat.test", "pw");
    expect(got.count).toBe(1);
    // IMAP always speaks CRLF; the sample was stored with LF as it arrived.
    expect(got.message).toBe(new TextDecoder().decode(body).replace(/\r?\n/g, "\r\n"));
  }, 60_000);
});

describe.skipIf(!have.swaks)("swaks submits through madmail's submission door", () => {
  test("AUTH PLAIN and LOGIN over STARTTLS; mail for a remote domain is queued", async () => {
    const { s } = await startMadmail();
    await s.box.run(["user", "add", "alice@chat.test", "--password-stdin"], { stdin: "alicepw\n" });
    // Keep the queued mail on this machine: no MX lookup for remote.test, a closed local port.
    await s.box.run(["endpoint-cache", "set", "remote.test", "http://127.0.0.1:9/mxdeliv"]);
    for (const method of ["PLAIN", "LOGIN"]) {
      const r = await swaks(["--server", `127.0.0.1:${s.submissionPort}`, "--tls", "--auth", method, "--auth-user", "alice@chat.test", "--auth-password", "alicepw",
        "--from", "alice@chat.test", "--to", "someone@remote.test", "--data", `@${SAMPLE}`]);
      expect(r.out).toContain("=== TLS started with cipher");
      expect(r.out).toMatch(/<~ {2}235 /);
      expect(r.code).toBe(0);
    }
    const bad = await swaks(["--server", `127.0.0.1:${s.submissionPort}`, "--tls", "--auth", "PLAIN", "--auth-user", "alice@chat.test", "--auth-password", "nope",
      "--from", "alice@chat.test", "--to", "someone@remote.test", "--data", `@${SAMPLE}`]);
    expect(bad.out).toContain("535 5.7.8");
    const rows = JSON.parse((await s.box.run(["queue", "list", "--json"])).stdout);
    expect(rows.length).toBe(2);
    expect(rows.every((r: { rcpt_domain: string }) => r.rcpt_domain === "remote.test")).toBe(true);
    // Before STARTTLS, AUTH is not offered, so swaks does not send the password in the clear;
    // told to anyway, it is not understood, and MAIL without a login is refused.
    const clear = await swaks(["--server", `127.0.0.1:${s.submissionPort}`, "--auth", "PLAIN", "--auth-user", "alice@chat.test", "--auth-password", "alicepw",
      "--from", "alice@chat.test", "--to", "someone@remote.test", "--data", `@${SAMPLE}`]);
    expect(clear.out).toMatch(/250-STARTTLS/);
    expect(clear.out).not.toMatch(/250[- ]AUTH/);
    expect(clear.out).not.toContain(Buffer.from("\0alice@chat.test\0alicepw").toString("base64"));
    const noAuth = await swaks(["--server", `127.0.0.1:${s.submissionPort}`, "--from", "alice@chat.test", "--to", "someone@remote.test", "--data", `@${SAMPLE}`]);
    expect(noAuth.out).toContain("530 5.7.0 Must issue a STARTTLS command first");
    expect(JSON.parse((await s.box.run(["queue", "list", "--json"])).stdout).length).toBe(2);
  });
});
