// madmail hands all remote mail to a smarthost (Mailman-style outgoing): a throw-away Postfix
// that requires STARTTLS and relays on to a capturing LMTP server.
import { afterAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { freePort, havePeers, makeCert, peerDir, startCapture, startPostfix } from "../helpers/peers.ts";
import { startServe } from "../helpers/server.ts";
import { ENCRYPTED } from "../inbound/_fixtures.ts";

const have = havePeers();
const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

test.skipIf(!have.postfix || !have.openssl)("remote mail goes to the smarthost over STARTTLS", async () => {
  const dir = peerDir("smarthost");
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const tls = await makeCert(join(dir, "tls"), "smarthost.test");
  const sink = await startCapture({ lmtp: true });
  cleanups.push(() => sink.close());
  const smtpPort = await freePort();
  const pf = await startPostfix({
    dir, smtpPort, tls,
    relayDomains: { "far.test": `lmtp:[127.0.0.1]:${sink.port}` },
    // The smarthost refuses to talk without TLS, so a plaintext fallback would fail the test.
    extra: { smtpd_tls_security_level: "encrypt", mynetworks: "127.0.0.0/8", smtpd_relay_restrictions: "permit_mynetworks, reject" },
  });
  cleanups.push(() => pf.stop());
  const a = await startServe({
    setup: [
      ["init", "--domain", "a.test"],
      ["config", "set", "relay.smarthost", `127.0.0.1:${smtpPort}`],
      ["config", "set", "relay.smarthost_tls", "starttls"],
      ["config", "set", "delivery.tls_verify", "never"],
    ],
  });
  cleanups.push(async () => (await a.stop(), a.box.cleanup()));
  const r = await a.box.run(["send", "--from", "alice@a.test", "--to", "x@far.test", "--to", "y@far.test"], { stdin: ENCRYPTED() });
  expect(r.code).toBe(0);
  const got = await sink.next();
  expect(got.mailFrom).toBe("alice@a.test");
  expect(got.rcptTo.sort()).toEqual(["x@far.test", "y@far.test"]);
  expect(got.data).toContain("-----BEGIN PGP MESSAGE-----");
  await pf.waitForLog(/TLS connection established from localhost\[127\.0\.0\.1\]/);
  const rows = JSON.parse((await a.box.run(["queue", "list", "--state", "delivered", "--json"])).stdout);
  expect(rows[0]).toMatchObject({ route: `smtp:127.0.0.1:${smtpPort}`, rcpt_domain: "far.test" });
}, 60_000);
