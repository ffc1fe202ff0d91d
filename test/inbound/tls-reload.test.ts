// A renewed certificate is used without a restart: serve (the compiled binary) looks at
// tls.cert / tls.key on SIGHUP (and every minute), refuses a pair whose key does not match,
// and serves the new pair on HTTPS, implicit-TLS submission and STARTTLS; SIGHUP does not stop
// it. At start, a mismatched pair is a configuration error that names the files.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import tls from "node:tls";
import { sandbox } from "../helpers/binary.ts";
import { ENCRYPTED } from "./_fixtures.ts";
import { havePeers, makeCert } from "../helpers/peers.ts";
import { freePort, startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";

const servers: ServerHandle[] = [];
afterAll(async () => {
  for (const s of servers) {
    await s.stop();
    s.box.cleanup();
  }
});

/** CN of the certificate a TLS handshake on `port` presents (implicit TLS). */
function tlsCn(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      resolve(String(s.getPeerCertificate().subject.CN));
      s.end();
    });
    s.on("error", reject);
  });
}

/** CN of the certificate after EHLO and STARTTLS on an SMTP listener. */
function starttlsCn(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = netConnect(port, "127.0.0.1");
    let buf = "";
    let step = 0;
    sock.on("error", reject);
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      // A complete reply: its last line has a space after the code.
      if (!/(^|\r\n)\d{3} [^\r\n]*\r\n$/.test(buf)) return;
      const reply = buf;
      buf = "";
      if (step === 0) sock.write("EHLO test.example\r\n");
      else if (step === 1) {
        if (!reply.includes("STARTTLS")) return reject(new Error(`no STARTTLS offered: ${reply}`));
        sock.write("STARTTLS\r\n");
      } else if (step === 2) {
        if (!reply.startsWith("220")) return reject(new Error(`STARTTLS refused: ${reply}`));
        sock.removeAllListeners("data");
        const t = tls.connect({ socket: sock, rejectUnauthorized: false }, () => {
          resolve(String(t.getPeerCertificate().subject.CN));
          t.end();
        });
        t.on("error", reject);
      }
      step++;
    });
  });
}

const skip = !havePeers().openssl;

describe.skipIf(skip)("TLS certificate renewal", () => {
  test("SIGHUP: a mismatched pair is refused (the old one stays), the complete new pair serves HTTPS, submissions and STARTTLS", async () => {
    const box = sandbox();
    const a = await makeCert(join(box.dir, "a"), "cert-a.test");
    const b = await makeCert(join(box.dir, "b"), "cert-b.test");
    const live = join(box.dir, "live");
    mkdirSync(live);
    const cert = join(live, "fullchain.pem");
    const key = join(live, "privkey.pem");
    copyFileSync(a.cert, cert);
    copyFileSync(a.key, key);
    const [httpsPort, submissionsPort] = [await freePort(), await freePort()];
    const s = await startServe({
      box,
      setup: [
        ["domain", "add", "a.test"], ["config", "set", "tls.cert", cert], ["config", "set", "tls.key", key],
        // A pull partner, for a long poll that spans the change of certificate.
        ["exchanger", "add", "bside", "http://127.0.0.1:9", "--mode", "pull", "--domains", "b.test"], ["config", "set", "relay.domains", "b.test"],
      ],
      extraArgs: ["--https", `127.0.0.1:${httpsPort}`, "--submissions", `127.0.0.1:${submissionsPort}`],
    });
    servers.push(s);
    const cns = async () => [await tlsCn(httpsPort), await tlsCn(submissionsPort), await starttlsCn(s.smtpPort), await starttlsCn(s.submissionPort)];
    expect(await cns()).toEqual(["cert-a.test", "cert-a.test", "cert-a.test", "cert-a.test"]);

    // Half a renewal: the new certificate next to the old key.
    copyFileSync(b.cert, cert);
    s.proc.kill("SIGHUP");
    await waitUntil("the refusal", () => s.logs().includes("SIGHUP: TLS certificate refused"));
    expect(s.logs()).toContain(`TLS certificate not reloaded, the current one stays in use: tls.key ${key} does not belong to the certificate in tls.cert ${cert}`);
    expect(await cns()).toEqual(["cert-a.test", "cert-a.test", "cert-a.test", "cert-a.test"]);

    // The renewal completes, while a long poll waits on the HTTPS listener.
    const token = (await box.run(["exchanger", "token", "bside"])).stdout.trim();
    const poll = fetch(`https://127.0.0.1:${httpsPort}/exchanger/pull?wait=20`, {
      headers: { Authorization: `Bearer ${token}` }, tls: { rejectUnauthorized: false },
    } as RequestInit);
    await Bun.sleep(300);
    copyFileSync(b.key, key);
    s.proc.kill("SIGHUP");
    await waitUntil("the reload", () => s.logs().includes("SIGHUP: TLS certificate reloaded"));
    expect(s.logs()).toMatch(/TLS certificate reloaded from \S+fullchain\.pem: CN=cert-b\.test, valid until \S+, sha256 [0-9A-F:]{95}/);
    expect(await cns()).toEqual(["cert-b.test", "cert-b.test", "cert-b.test", "cert-b.test"]);
    // The old listener finishes the poll it holds: mail for the partner arrives and is handed out.
    const post = await fetch(`${s.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "a@a.test", "X-Mail-To": "bob@b.test" }, body: ENCRYPTED() });
    expect(post.status).toBe(200);
    const polled = await poll;
    expect(polled.status).toBe(200);
    expect(((await polled.json()) as { messages: unknown[] }).messages).toHaveLength(1);
    const health = await fetch(`https://127.0.0.1:${httpsPort}/healthz`, { tls: { rejectUnauthorized: false } } as RequestInit);
    expect(health.status).toBe(200);

    // Nothing changed since: nothing to do, and the server is still up.
    s.proc.kill("SIGHUP");
    await waitUntil("the unchanged answer", () => s.logs().includes("SIGHUP: TLS certificate unchanged"));
    expect(s.proc.exitCode).toBeNull();
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect(await s.stop()).toBe(0);
  });

  test("SIGHUP without a certificate says so and does not stop the server", async () => {
    const s = await startServe({ setup: [["domain", "add", "a.test"]] });
    servers.push(s);
    s.proc.kill("SIGHUP");
    await waitUntil("the answer", () => s.logs().includes("SIGHUP: no TLS certificate in use"));
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect(await s.stop()).toBe(0);
  });

  test("at start, a key that does not match the certificate is a configuration error naming both files", async () => {
    const box = sandbox();
    const a = await makeCert(join(box.dir, "a"), "cert-a.test");
    const b = await makeCert(join(box.dir, "b"), "cert-b.test");
    for (const [k, v] of [["tls.cert", a.cert], ["tls.key", b.key], ["listen.smtp", "off"], ["listen.lmtp", "off"]]) {
      expect((await box.run(["config", "set", k!, v!])).code).toBe(0);
    }
    // Submission (STARTTLS) uses the pair. A server that came up anyway is stopped after 10 s.
    const proc = Bun.spawn([box.bin, "serve", "--http", `127.0.0.1:${await freePort()}`, "--submission", `127.0.0.1:${await freePort()}`], {
      cwd: box.dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", MADMAIL_DB: box.db }, stdout: "ignore", stderr: "pipe",
    });
    const timer = setTimeout(() => proc.kill(), 10_000);
    const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    clearTimeout(timer);
    box.cleanup();
    expect({ code, stderr }).toEqual({ code: 1, stderr: `madmail: tls.key ${b.key} does not belong to the certificate in tls.cert ${a.cert}\n` });
  });
});
