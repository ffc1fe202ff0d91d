// Self-test of the real-peer harness (test/helpers/peers.ts); needs no madmail.
// Skips what is not installed (.ci/install-peers.sh installs everything; Postfix/Dovecot need root).
import { afterAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import {
  dropMessage,
  freePort,
  havePeers,
  imapFetch,
  mailOwner,
  makeCert,
  peerDir,
  smtpSink,
  smtpSource,
  startCapture,
  startDovecot,
  startPostfix,
  swaks,
  waitForPort,
} from "../helpers/peers.ts";

const have = havePeers();
if (have.missing.length) console.warn(`peer harness: skipping parts: ${have.missing.join("; ")}`);

const dirs: string[] = [];
function scratch(label: string): string {
  const d = peerDir(label);
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const MESSAGE = ["From: Alice <alice@remote.test>", "To: bob@relay.test", "Subject: harness check", "Message-ID: <harness-1@remote.test>", "", "hello through a real peer", ""].join("\r\n");

async function portClosed(port: number): Promise<boolean> {
  return waitForPort(port, 200).then(
    () => false,
    () => true,
  );
}

describe("dovecot", () => {
  test.skipIf(!have.dovecot)("serves a Maildir message dropped by another writer over IMAP", async () => {
    const dir = scratch("dc");
    const mailRoot = join(dir, "mail");
    const owner = mailOwner(); // Dovecot refuses uid 0: the Maildir belongs to nobody:nogroup
    const imapPort = await freePort();
    const dc = await startDovecot({ dir, imapPort, mailRoot, users: [{ address: "alice@chat.test", password: "alicepass" }], uid: owner.uid, gid: owner.gid });
    try {
      expect(await imapFetch(imapPort, "alice@chat.test", "alicepass")).toEqual({ count: 0, message: null });
      dropMessage(mailRoot, "alice@chat.test", MESSAGE, owner);
      const got = await imapFetch(imapPort, "alice@chat.test", "alicepass");
      expect(got.count).toBe(1);
      expect(got.message).toBe(MESSAGE);
      await expect(imapFetch(imapPort, "alice@chat.test", "wrong")).rejects.toThrow(/AUTHENTICATIONFAILED/);
    } finally {
      await dc.stop();
    }
    expect(await portClosed(imapPort)).toBe(true);
  });
});

describe("postfix", () => {
  test.skipIf(!have.postfix || !have.swaks)("relays a domain to an LMTP server with the right envelope", async () => {
    const lmtp = await startCapture({ lmtp: true });
    const smtpPort = await freePort();
    const pf = await startPostfix({ dir: scratch("pf"), smtpPort, relayDomains: { "relay.test": `lmtp:[127.0.0.1]:${lmtp.port}` } });
    try {
      const sent = await swaks(["--server", `127.0.0.1:${smtpPort}`, "--from", "alice@remote.test", "--to", "bob@relay.test,carol@relay.test", "--data", "-"], { stdin: MESSAGE });
      expect(sent.code).toBe(0);
      expect(sent.out).toContain("250 2.0.0 Ok: queued as");

      const got = await lmtp.next();
      expect(got.opening).toBe("LHLO");
      expect(got.helo).toBe("postfix.test");
      expect(got.mailFrom).toBe("alice@remote.test");
      expect(got.rcptTo.sort()).toEqual(["bob@relay.test", "carol@relay.test"]);
      expect(got.data).toContain("Subject: harness check");
      expect(got.data).toMatch(/^Received: from /m);
      await pf.waitForLog(/to=<carol@relay\.test>.*status=sent/);

      // a domain without a route is refused at RCPT
      const refused = await swaks(["--server", `127.0.0.1:${smtpPort}`, "--from", "alice@remote.test", "--to", "x@elsewhere.test", "--quit-after", "RCPT"]);
      expect(refused.code).not.toBe(0);
      expect(refused.out).toContain("554 5.7.1");
    } finally {
      await pf.stop();
      await lmtp.close();
    }
    expect(await portClosed(smtpPort)).toBe(true);
  });

  test.skipIf(!have.postfix || !have.swaks)("defers while the next hop is down, delivers after flush", async () => {
    const lmtpPort = await freePort();
    const smtpPort = await freePort();
    const pf = await startPostfix({
      dir: scratch("pf"),
      smtpPort,
      relayDomains: { "relay.test": `lmtp:[127.0.0.1]:${lmtpPort}` },
      extra: { maximal_backoff_time: "60s", minimal_backoff_time: "60s", queue_run_delay: "60s" }, // only flush() retries
    });
    let lmtp: Awaited<ReturnType<typeof startCapture>> | undefined;
    try {
      const sent = await swaks(["--server", `127.0.0.1:${smtpPort}`, "--from", "<>", "--to", "bob@relay.test", "--data", "-"], { stdin: MESSAGE });
      expect(sent.code).toBe(0);
      await pf.waitForLog(/status=deferred \(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: Connection refused\)/);
      expect(pf.queue()).toContain("bob@relay.test");

      lmtp = await startCapture({ lmtp: true, port: lmtpPort });
      await pf.flush();
      const got = await lmtp.next(10_000);
      expect(got.mailFrom).toBe(""); // the null sender is relayed as such
      expect(got.rcptTo).toEqual(["bob@relay.test"]);
      await pf.waitForLog(/status=sent/);
      expect(pf.queue()).toContain("Mail queue is empty");
    } finally {
      await pf.stop();
      await lmtp?.close();
    }
  });
});

describe("postfix recipient verification", () => {
  test.skipIf(!have.postfix || !have.swaks)("reject_unverified_recipient asks the LMTP next hop at RCPT time", async () => {
    const lmtp = await startCapture({ lmtp: true, rejectRecipients: ["ghost@relay.test"] });
    const smtpPort = await freePort();
    const pf = await startPostfix({
      dir: scratch("pf"),
      smtpPort,
      relayDomains: { "relay.test": `lmtp:[127.0.0.1]:${lmtp.port}` },
      extra: { smtpd_recipient_restrictions: "reject_unverified_recipient" },
    });
    try {
      const probe = (to: string) => swaks(["--server", `127.0.0.1:${smtpPort}`, "--from", "alice@remote.test", "--to", to, "--quit-after", "RCPT"]);
      const ghost = await probe("ghost@relay.test");
      expect(ghost.code).not.toBe(0);
      expect(ghost.out).toMatch(/550 5\.1\.1 <ghost@relay\.test>: Recipient address rejected: undeliverable address/);
      const bob = await probe("bob@relay.test");
      expect(bob.code).toBe(0);
      expect(bob.out).toContain("250 2.1.5 Ok");
      expect(lmtp.messages.length).toBe(0); // probes end before DATA
    } finally {
      await pf.stop();
      await lmtp.close();
    }
  });
});

describe("swaks", () => {
  test.skipIf(!have.swaks || !have.openssl)("talks SMTP with STARTTLS to an smtp-server instance", async () => {
    const tls = await makeCert(join(scratch("tls"), "tls"), "mx.test");
    const smtp = await startCapture({ tls });
    try {
      const r = await swaks(["--server", `127.0.0.1:${smtp.port}`, "--tls", "--ehlo", "client.test", "--from", "a@a.test", "--to", "b@b.test", "--header", "Subject: via swaks", "--body", "swaks body"]);
      expect(r.code).toBe(0);
      expect(r.out).toContain("=== TLS started with cipher");
      const got = await smtp.next();
      expect(got).toMatchObject({ mailFrom: "a@a.test", rcptTo: ["b@b.test"], helo: "client.test", opening: "EHLO", secure: true });
      expect(got.data).toContain("Subject: via swaks");
      expect(got.data).toContain("swaks body");
    } finally {
      await smtp.close();
    }
  });
});

describe("smtp-source / smtp-sink", () => {
  test.skipIf(!have.smtpTools || !have.swaks)("smtp-source loads a server, smtp-sink accepts mail", async () => {
    const smtp = await startCapture();
    try {
      const r = await smtpSource(["-s", "2", "-m", "10", "-l", "500", "-f", "a@a.test", "-t", "b@b.test", `127.0.0.1:${smtp.port}`]);
      expect(r.code).toBe(0);
      for (let i = 0; i < 10; i++) await smtp.next(5_000);
      expect(smtp.messages.length).toBe(10);
    } finally {
      await smtp.close();
    }

    const port = await freePort();
    const sink = await smtpSink({ port, lmtp: true });
    try {
      const r = await swaks(["--protocol", "LMTP", "--server", `127.0.0.1:${port}`, "--from", "a@a.test", "--to", "b@b.test"]);
      expect(r.code).toBe(0);
      expect(r.out).toContain("<-  250");
    } finally {
      await sink.stop();
    }
    expect(await portClosed(port)).toBe(true);
  });
});
