import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { waitUntil, type ServerHandle } from "../helpers/server.ts";
import { RawSmtp, sendMail } from "../helpers/smtp-client.ts";
import { ENCRYPTED, PLAINTEXT, maildirNew, readDelivered, startChatServer } from "./_fixtures.ts";

let s: ServerHandle;
beforeAll(async () => {
  s = await startChatServer({ quota: "5K" });
});
afterAll(async () => {
  await s.stop();
  s.box.cleanup();
});

const body = () => ENCRYPTED().toString("latin1");

describe("SMTP MX door", () => {
  test("EHLO advertises SIZE, 8BITMIME, SMTPUTF8 and no AUTH", async () => {
    const { client } = await RawSmtp.open(s.smtpPort);
    const ehlo = await client.cmd("EHLO peer.test");
    client.close();
    expect(ehlo.code).toBe(250);
    expect(ehlo.text).toContain("SIZE 31457280");
    expect(ehlo.text).toContain("8BITMIME");
    expect(ehlo.text).toContain("SMTPUTF8");
    expect(ehlo.text).not.toContain("AUTH");
  });

  test("delivers to a local user; unknown local users are accepted and dropped", async () => {
    const r = await sendMail(s.smtpPort, { from: "alice@a.test", to: ["carol@chat.test", "ghost@chat.test"], body: body() });
    expect(r.rcpts.map((x) => x.code)).toEqual([250, 250]);
    expect(r.data[0]!.code).toBe(250);
    // SMTP carries CRLF line endings; the message is stored as it arrived on the wire.
    const wire = Buffer.from(body().replace(/\r?\n/g, "\r\n"), "latin1");
    expect(readDelivered(s, "carol@chat.test").some((f) => f.equals(wire))).toBe(true);
    expect(maildirNew(s, "ghost@chat.test")).toEqual([]);
  });

  test("at most 1,000 recipients per transaction (452 4.5.3 beyond); a repeated one still counts once; the message goes to the first 1,000", async () => {
    const to = ["carol@chat.test", ...Array.from({ length: 999 }, (_, i) => `ghost${i}@chat.test`), "more@chat.test", "CAROL@chat.test"];
    const r = await sendMail(s.smtpPort, { from: "alice@a.test", to, body: body() });
    expect(r.rcpts.slice(0, 1000).every((x) => x.code === 250)).toBe(true);
    expect(r.rcpts[1000]).toMatchObject({ code: 452, text: "4.5.3 Too many recipients" });
    expect(r.rcpts[1001]!.code).toBe(250); // carol again: already in the envelope
    expect(r.data[0]!.code).toBe(250);
    expect(maildirNew(s, "more@chat.test")).toEqual([]);
  });

  test("at most 50 connections from one address (421 4.7.0 for the next, until one closes); LMTP, the MTA's door, has no such limit", async () => {
    const open = await Promise.all(Array.from({ length: 50 }, () => RawSmtp.open(s.smtpPort)));
    try {
      expect(open.every((o) => o.greeting.code === 220)).toBe(true);
      const extra = await RawSmtp.open(s.smtpPort);
      expect(extra.greeting).toMatchObject({ code: 421, text: expect.stringContaining("4.7.0 Too many connections from your address") });
      extra.client.close();
      const lmtp = await Promise.all(Array.from({ length: 60 }, () => RawSmtp.open(s.lmtpPort)));
      expect(lmtp.every((o) => o.greeting.code === 220)).toBe(true);
      for (const o of lmtp) o.client.close();
      open.pop()!.client.close();
      await waitUntil("a slot free again", async () => {
        const again = await RawSmtp.open(s.smtpPort);
        again.client.close();
        return again.greeting.code === 220 || undefined;
      });
    } finally {
      for (const o of open) o.client.close();
    }
  });

  test("the 20th refused recipient on a connection closes it (421 4.7.0), as Postfix's hard error limit", async () => {
    const { client } = await RawSmtp.open(s.smtpPort);
    expect((await client.cmd("EHLO peer.test")).code).toBe(250);
    expect((await client.cmd("MAIL FROM:<x@peer.test>")).code).toBe(250);
    for (let i = 1; i < 20; i++) expect((await client.cmd(`RCPT TO:<u${i}@elsewhere.test>`)).code).toBe(550);
    expect(await client.cmd("RCPT TO:<u20@elsewhere.test>")).toMatchObject({ code: 421, text: "4.7.0 Too many errors, closing connection" });
    client.close();
  });

  test("RCPT for a foreign domain: 550 5.7.1 Relaying denied", async () => {
    const r = await sendMail(s.smtpPort, { from: "alice@a.test", to: ["x@elsewhere.test"], body: body() });
    expect(r.rcpts[0]!.code).toBe(550);
    expect(r.rcpts[0]!.text).toStartWith("5.7.1");
  });

  test("plaintext: 523 5.7.1 Encryption Needed", async () => {
    const r = await sendMail(s.smtpPort, { from: "alice@a.test", to: ["carol@chat.test"], body: PLAINTEXT });
    expect(r.data[0]).toMatchObject({ code: 523, text: "5.7.1 Encryption Needed: Invalid Unencrypted Mail" });
  });

  test("blocked sender domain: 554 5.7.1", async () => {
    await s.box.run(["federation", "block", "blocked.test"]);
    try {
      const r = await sendMail(s.smtpPort, { from: "x@blocked.test", to: ["carol@chat.test"], body: body() });
      expect(r.data[0]!.code).toBe(554);
      expect(r.data[0]!.text).toStartWith("5.7.1");
    } finally {
      await s.box.run(["federation", "remove", "blocked.test"]);
    }
  });

  test("too large: 552 5.3.4", async () => {
    await s.box.run(["config", "set", "limits.max_message_size", "1K"]);
    try {
      const r = await sendMail(s.smtpPort, { from: "alice@a.test", to: ["carol@chat.test"], body: body() });
      expect(r.data[0]).toMatchObject({ code: 552 });
      expect(r.data[0]!.text).toStartWith("5.3.4");
    } finally {
      await s.box.run(["config", "unset", "limits.max_message_size"]);
    }
  });

  test("over quota: 552 5.2.2", async () => {
    let last = 250;
    for (let i = 0; i < 4 && last === 250; i++) {
      last = (await sendMail(s.smtpPort, { from: "alice@a.test", to: ["bob@chat.test"], body: body() })).data[0]!.code;
    }
    const r = await sendMail(s.smtpPort, { from: "alice@a.test", to: ["bob@chat.test"], body: body() });
    expect(r.data[0]).toMatchObject({ code: 552, text: "5.2.2 Mailbox full" });
  });

  // SMTP smuggling: only <CR><LF>.<CR><LF> ends DATA. Each probe hides a second transaction
  // behind a bare-LF or bare-CR "end of data"; it must stay part of the first message.
  test.each([
    ["bare LF dot bare LF", "\n.\n"],
    ["bare LF dot CRLF", "\n.\r\n"],
    ["CRLF dot bare LF", "\r\n.\n"],
    ["bare CR dot bare CR", "\r.\r"],
    ["bare CR dot CRLF", "\r.\r\n"],
  ])("smuggling with %s does not split the message", async (_name, fake) => {
    const before = maildirNew(s, "carol@chat.test").length;
    const { client } = await RawSmtp.open(s.smtpPort);
    try {
      await client.cmd("EHLO smuggler.test");
      expect((await client.cmd("MAIL FROM:<alice@a.test>")).code).toBe(250);
      expect((await client.cmd("RCPT TO:<carol@chat.test>")).code).toBe(250);
      expect((await client.cmd("DATA")).code).toBe(354);
      const smuggled = `${fake}MAIL FROM:<admin@chat.test>\r\nRCPT TO:<carol@chat.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nplain\r\n`;
      const enc = body().replace(/\r?\n/g, "\r\n");
      // Put the probe inside the armored block, where a real message could carry junk bytes.
      client.write(Buffer.from(enc.replace("Version: 1\r\n", `Version: 1\r\n${smuggled}`) + ".\r\n", "latin1"));
      const reply = await client.reply();
      expect([250, 523]).toContain(reply.code);
      // Exactly one reply to exactly one DATA: nothing pipelined was executed.
      const quit = await client.cmd("QUIT");
      expect(quit.code).toBe(221);
    } finally {
      client.close();
    }
    const after = readDelivered(s, "carol@chat.test");
    expect(after.length - before).toBeLessThanOrEqual(1);
    expect(after.some((f) => f.toString("latin1").startsWith("Subject: smuggled"))).toBe(false);
  });
});

describe("LMTP door", () => {
  test("unknown and reserved users are rejected at RCPT with 550 5.1.1", async () => {
    const r = await sendMail(s.lmtpPort, { lmtp: true, from: "alice@a.test", to: ["ghost@chat.test", "postmaster@chat.test", "x@other.test", "carol@chat.test"], body: body() });
    expect(r.rcpts.map((x) => x.code)).toEqual([550, 550, 550, 250]);
    expect(r.rcpts[0]!.text).toStartWith("5.1.1");
    expect(r.data.map((x) => x.code)).toEqual([250]);
  });

  test("one reply per recipient after DATA: the one over quota gets 552 5.2.2, the other 250", async () => {
    // bob is over quota from the SMTP test above (5K quota), so give RCPT no SIZE hint:
    // bob's used bytes are already >= quota, so he is refused at RCPT. Raise quota a little
    // so that he passes RCPT but this message does not fit.
    const used = JSON.parse((await s.box.run(["user", "list", "--json"])).stdout).find((u: { address: string }) => u.address === "bob@chat.test").used_bytes;
    await s.box.run(["user", "quota", "bob@chat.test", String(used + 100)]);
    const before = maildirNew(s, "carol@chat.test").length;
    const r = await sendMail(s.lmtpPort, { lmtp: true, from: "alice@a.test", to: ["bob@chat.test", "carol@chat.test"], body: body() });
    expect(r.rcpts.map((x) => x.code)).toEqual([250, 250]);
    expect(r.data.map((x) => x.code)).toEqual([552, 250]);
    expect(r.data[0]!.text).toBe("5.2.2 Mailbox full");
    expect(maildirNew(s, "carol@chat.test").length).toBe(before + 1);
  });

  test("plaintext gets 523 for each recipient", async () => {
    const r = await sendMail(s.lmtpPort, { lmtp: true, from: "alice@a.test", to: ["carol@chat.test", "bob@chat.test"], body: PLAINTEXT });
    expect(r.data.map((x) => x.code)).toEqual([523, 523]);
  });
});

describe("settings that follow without a restart", () => {
  test("hostname and limits.max_message_size: new connections greet with the new name, EHLO and DATA use the new size", async () => {
    const t = await startChatServer();
    try {
      const session = async () => {
        const { client, greeting } = await RawSmtp.open(t.smtpPort);
        const ehlo = await client.cmd("EHLO peer.test");
        client.close();
        return { name: greeting.text.split(" ")[0], size: /SIZE (\d+)/.exec(ehlo.text)?.[1] };
      };
      const before = await session();
      expect(before.size).toBe("31457280");
      expect((await t.box.run(["config", "set", "hostname", "mx.renamed.test"])).stdout).toBe("hostname = mx.renamed.test\n");
      expect((await t.box.run(["config", "set", "limits.max_message_size", "2K"])).code).toBe(0);
      const after = await waitUntil("the new settings", async () => {
        const now = await session();
        return now.name === "mx.renamed.test" && now.size === "2048" && now;
      }, 10_000);
      expect(after).toEqual({ name: "mx.renamed.test", size: "2048" });
      // A message over the new limit is refused at DATA.
      expect((await sendMail(t.smtpPort, { from: "alice@a.test", to: ["carol@chat.test"], body: body() + "x".repeat(3000) })).data[0]!.code).toBe(552);
    } finally {
      await t.stop();
      t.box.cleanup();
    }
  });
});
