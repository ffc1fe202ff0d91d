// Submission at A -> queue -> /mxdeliv at B, over real sockets between two servers.
import { afterEach, describe, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { waitUntil, type ServerHandle } from "../helpers/server.ts";
import { RawSmtp } from "../helpers/smtp-client.ts";
import { ENCRYPTED, ENCRYPTED_FROM, PLAINTEXT, maildirNew, readDelivered } from "../inbound/_fixtures.ts";
import { startPair } from "./_two-servers.ts";

const running: ServerHandle[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) {
    await s.stop("SIGKILL").catch(() => {});
    s.box.cleanup();
  }
});

async function pair(opts?: Parameters<typeof startPair>[0]) {
  const p = await startPair(opts);
  running.push(p.a, p.b);
  return p;
}


const queueJson = async (s: ServerHandle, ...args: string[]) => JSON.parse((await s.box.run(["queue", "list", "--json", ...args])).stdout);

function submit(a: ServerHandle, to: string[], raw: Uint8Array | string, pass = "alicepw") {
  const t = nodemailer.createTransport({ host: "127.0.0.1", port: a.submissionPort, secure: false, ignoreTLS: true, auth: { user: "alice@a.test", pass } });
  return t.sendMail({ envelope: { from: "alice@a.test", to }, raw: typeof raw === "string" ? raw : Buffer.from(raw) });
}

describe("submission -> queue -> /mxdeliv", () => {
  test("AUTH from nodemailer; delivered into B's Maildir byte for byte", async () => {
    const { a, b } = await pair();
    const info = await submit(a, ["bob@b.test", "carol@b.test"], ENCRYPTED_FROM("alice@a.test"));
    expect(info.accepted).toEqual(["bob@b.test", "carol@b.test"]);
    await waitUntil("bob's mail", () => maildirNew(b, "bob@b.test").length === 1);
    await waitUntil("carol's mail", () => maildirNew(b, "carol@b.test").length === 1);
    // SMTP carries CRLF; what A accepted is what B stores (no DKIM key for a.test here).
    const wire = Buffer.from(ENCRYPTED_FROM("alice@a.test").toString("latin1").replace(/\r?\n/g, "\r\n"), "latin1");
    expect(readDelivered(b, "bob@b.test")[0]!.equals(wire)).toBe(true);
    const rows = await waitUntil("delivered row", async () => {
      const r = await queueJson(a, "--state", "delivered");
      return r.length === 1 ? r : undefined;
    });
    // One delivery row for the two recipients of one domain.
    expect(rows[0]).toMatchObject({ rcpt_domain: "b.test", rcpts: ["bob@b.test", "carol@b.test"], state: "delivered", tries: 1 });
  });

  test("wrong password: 535; plaintext: 523; MAIL FROM of another user: 553", async () => {
    const { a } = await pair();
    await expect(submit(a, ["bob@b.test"], ENCRYPTED_FROM("alice@a.test"), "wrong")).rejects.toMatchObject({ responseCode: 535 });
    await expect(submit(a, ["bob@b.test"], PLAINTEXT)).rejects.toMatchObject({ responseCode: 523 });
    const t = nodemailer.createTransport({ host: "127.0.0.1", port: a.submissionPort, ignoreTLS: true, auth: { user: "alice@a.test", pass: "alicepw" } });
    await expect(t.sendMail({ envelope: { from: "mallory@a.test", to: ["bob@b.test"] }, raw: ENCRYPTED() })).rejects.toMatchObject({ responseCode: 553 });
    expect(await queueJson(a)).toEqual([]);
  });

  test("a user of a domain that was removed cannot log in (535), as `send` refuses its address", async () => {
    const { a } = await pair({ aSetup: [["domain", "add", "q.test"], { args: ["user", "add", "u@q.test", "--password-stdin"], stdin: "upw\n" }] });
    const login = (pass: string) => nodemailer.createTransport({ host: "127.0.0.1", port: a.submissionPort, ignoreTLS: true, auth: { user: "u@q.test", pass } }).verify();
    expect(await login("upw")).toBe(true);
    expect((await a.box.run(["domain", "remove", "q.test"])).code).toBe(0);
    await waitUntil("the removal reaches serve", async () => login("upw").then(() => false, (e) => e.responseCode === 535));
  });

  test("From: must be the logged-in user, alone; a user's 'bounce' is plaintext like any other", async () => {
    const { a, b } = await pair({ aSetup: [["user", "add", "al2@a.test"]] });
    const withFrom = (from: string) => Buffer.from(ENCRYPTED().toString("latin1").replace(/^From: .*$/m, `From: ${from}`), "latin1");
    for (const from of ['"Al Two" <al2@a.test>', "<alice@a.test>, <al2@a.test>", "undisclosed-recipients:;"]) {
      await expect(submit(a, ["bob@b.test"], withFrom(from))).rejects.toMatchObject({
        responseCode: 553, response: "553 5.7.1 From: header must be the authenticated sender's address",
      });
    }
    const noFrom = Buffer.from(ENCRYPTED().toString("latin1").replace(/^From: .*\r?\n/m, ""), "latin1");
    await expect(submit(a, ["bob@b.test"], noFrom)).rejects.toMatchObject({ responseCode: 553 });
    const dsn = [
      "From: Mail Delivery System <MAILER-DAEMON@a.test>", "To: <bob@b.test>", "Subject: plaintext", "Auto-Submitted: auto-replied",
      "MIME-Version: 1.0", 'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"', "",
      "--b1", "Content-Type: text/plain", "", "Any plaintext at all.", "", "--b1", "Content-Type: message/delivery-status", "",
      "Reporting-MTA: dns; a.test", "", "Final-Recipient: rfc822; x@y.test", "Action: failed", "Status: 5.0.0", "", "--b1--", "",
    ].join("\r\n");
    await expect(submit(a, ["bob@b.test"], dsn.replace("MAILER-DAEMON@a.test", "alice@a.test"))).rejects.toMatchObject({ responseCode: 523 });
    expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: dsn })).code).toBe(1);
    expect(await queueJson(a)).toEqual([]);
    // Her own address with another spelling or a display name is hers.
    await submit(a, ["bob@b.test"], withFrom('"Alice" <Alice@A.TEST>'));
    await waitUntil("bob's mail", () => maildirNew(b, "bob@b.test").length === 1);
  });

  test("pipelined MAIL, RCPT, DATA: the three replies in order and in one packet; refused, each command answered", async () => {
    const { a, b } = await pair();
    const { client } = await RawSmtp.open(a.submissionPort);
    try {
      expect((await client.cmd("EHLO client.test")).text).toContain("PIPELINING");
      expect((await client.cmd(`AUTH PLAIN ${Buffer.from("\0alice@a.test\0alicepw").toString("base64")}`)).code).toBe(235);
      const before = client.chunks.length;
      client.write("MAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\n");
      const replies = [await client.reply(), await client.reply(), await client.reply()];
      expect(replies.map((r) => r.code)).toEqual([250, 250, 354]);
      // One write by the server (the replies of one pipelined group leave together).
      expect(client.chunks.length - before).toBe(1);
      const text = ENCRYPTED_FROM("alice@a.test").toString("latin1").replace(/\r?\n/g, "\r\n").replace(/^\./gm, "..");
      client.write(Buffer.from(text + (text.endsWith("\r\n") ? "" : "\r\n") + ".\r\n", "latin1"));
      expect((await client.reply()).code).toBe(250);
      // Another user's address: MAIL refused, so RCPT and DATA have nothing to work on.
      client.write("MAIL FROM:<mallory@a.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\n");
      const refused = [await client.reply(), await client.reply(), await client.reply()];
      expect(refused.map((r) => r.code)).toEqual([553, 503, 503]);
      expect((await client.cmd("QUIT")).code).toBe(221);
    } finally {
      client.close();
    }
    await waitUntil("delivery", () => maildirNew(b, "bob@b.test").length === 1);
    expect(readDelivered(b, "bob@b.test")[0]!.equals(Buffer.from(ENCRYPTED_FROM("alice@a.test").toString("latin1").replace(/\r?\n/g, "\r\n"), "latin1"))).toBe(true);
  });

  test("a group of 250 on one peer: three POSTs of at most 100 recipients, each with its own delivery id", async () => {
    const { a, b } = await pair();
    // Past about 350 X-Mail-To headers a Bun-based peer answers 431 (16 KiB of headers).
    const group = ["bob@b.test", ...Array.from({ length: 248 }, (_, i) => `a-member-of-a-rather-large-group-chat-number-${i}@b.test`), "carol@b.test"];
    const info = await submit(a, group, ENCRYPTED_FROM("alice@a.test"));
    expect(info.accepted).toHaveLength(250);
    await waitUntil("bob's mail", () => maildirNew(b, "bob@b.test").length === 1);
    await waitUntil("carol's mail", () => maildirNew(b, "carol@b.test").length === 1);
    const [row] = await waitUntil("delivered row", async () => {
      const r = await queueJson(a, "--state", "delivered");
      return r.length === 1 ? r : undefined;
    });
    expect(row).toMatchObject({ rcpt_domain: "b.test", state: "delivered", tries: 1 });
    const posts = b.logs().split("\n").filter((l) => l.includes("[mxdeliv]") && l.includes("from_domain=a.test"));
    expect(posts.map((l) => /rcpts=(\d+)/.exec(l)?.[1])).toEqual(["100", "100", "50"]);
  });

  test("addresses beyond ASCII cross /mxdeliv as UTF-8 (RFC 6532) and reach their Maildirs", async () => {
    const { a, b } = await pair();
    for (const u of ["müller@b.test", "δοκιμή@b.test"]) expect((await b.box.run(["user", "add", u])).code).toBe(0);
    const r = await a.box.run(["send", "--from", "alice@a.test", "--to", "müller@b.test", "--to", "δοκιμή@b.test"], { stdin: ENCRYPTED() });
    expect(r.code).toBe(0);
    await waitUntil("müller's mail", () => maildirNew(b, "müller@b.test").length === 1);
    await waitUntil("δοκιμή's mail", () => maildirNew(b, "δοκιμή@b.test").length === 1);
    // One POST for both (the log line follows the files).
    await waitUntil("B's log line", () => b.logs().includes("rcpts=2 "));
  });

  test("madmail send prints the queue id and delivers", async () => {
    const { a, b } = await pair();
    const r = await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test", "--to", "carol@b.test"], { stdin: ENCRYPTED() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^[0-9a-z]{16}\n$/);
    await waitUntil("delivery", () => maildirNew(b, "bob@b.test").length === 1 && maildirNew(b, "carol@b.test").length === 1);
    expect(readDelivered(b, "bob@b.test")[0]!.equals(ENCRYPTED())).toBe(true);
  });

  test("peer down: deferred with last_error; peer up + queue flush: delivered exactly once", async () => {
    const { a, b } = await pair({ aSetup: [["config", "set", "queue.retry_schedule", "1h"]] });
    await b.stop();
    const r = await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() });
    expect(r.code).toBe(0);
    const [row] = await waitUntil("deferred", async () => {
      const rows = await queueJson(a);
      return rows[0]?.state === "deferred" ? rows : undefined;
    });
    expect(row.last_error).toContain("ECONNREFUSED");
    // Bring B back on the same ports.
    const { startServe } = await import("../helpers/server.ts");
    void startServe; // B restarts from its own sandbox below
    const b2 = await restart(b);
    running.push(b2);
    expect((await a.box.run(["queue", "flush"])).code).toBe(0);
    await waitUntil("delivered", () => maildirNew(b2, "bob@b.test").length === 1);
    await Bun.sleep(500);
    expect(maildirNew(b2, "bob@b.test").length).toBe(1);
    expect((await queueJson(a, "--state", "delivered"))[0].tries).toBe(2);
  });

  test("permanent refusal (policy 403): dead, and a DSN lands in the sender's Maildir", async () => {
    const { a } = await pair({ bSetup: [["federation", "block", "a.test"]] });
    await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() });
    const [row] = await waitUntil("dead", async () => {
      const rows = await queueJson(a, "--state", "dead");
      return rows.length ? rows : undefined;
    });
    expect(row.last_error).toContain("403");
    const dsn = await waitUntil("DSN", () => readDelivered(a, "alice@a.test")[0]);
    const text = dsn.toString("utf8");
    expect(text).toContain("multipart/report");
    expect(text).toContain("Final-Recipient: rfc822; bob@b.test");
    expect(text).toContain("Action: failed");
  });
});

/** Restarts a stopped server on the same ports with the same state file. */
async function restart(s: ServerHandle): Promise<ServerHandle> {
  const proc = Bun.spawn(
    [s.box.bin, "serve", "--http", `127.0.0.1:${s.httpPort}`, "--smtp", `127.0.0.1:${s.smtpPort}`, "--lmtp", `127.0.0.1:${s.lmtpPort}`, "--submission", `127.0.0.1:${s.submissionPort}`, "--submissions", "off"],
    { cwd: s.box.dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", MADMAIL_DB: s.box.db }, stdout: "ignore", stderr: "ignore" },
  );
  await waitUntil("restart", async () => fetch(`${s.url}/healthz`).then((r) => r.ok, () => false));
  return { ...s, proc, stop: async (signal = "SIGTERM") => (proc.kill(signal), await proc.exited), logs: () => "" };
}
