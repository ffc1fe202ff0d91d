import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { postMxdeliv, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, PLAINTEXT, maildirNew, readDelivered, startChatServer } from "./_fixtures.ts";

let s: ServerHandle;
beforeAll(async () => {
  s = await startChatServer({ quota: "10K" });
});
afterAll(async () => {
  await s.stop();
  s.box.cleanup();
});

describe("POST /mxdeliv", () => {
  test("delivers an encrypted message into the Maildir, byte for byte", async () => {
    const before = maildirNew(s, "carol@chat.test").length;
    const r = await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED());
    expect(r).toEqual({ status: 200, text: "OK" });
    const files = readDelivered(s, "carol@chat.test");
    expect(files.length).toBe(before + 1);
    expect(files.some((f) => f.equals(ENCRYPTED()))).toBe(true);
  });

  test.each([
    ["no X-Mail-To", {}, 400, "bad request"],
    ["bad recipient address", { "X-Mail-To": "not-an-address" }, 400, "bad request"],
    ["bad sender address", { "X-Mail-To": "bob@chat.test", "X-Mail-From": "a b@c" }, 400, "bad request"],
  ])("%s -> %d", async (_name, headers, status, text) => {
    const r = await fetch(`${s.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "alice@a.test", ...headers }, body: ENCRYPTED() });
    expect(r.status).toBe(status);
    expect(await r.text()).toBe(text);
  });

  test("plaintext is refused with 403 Encryption Needed, for real and unknown users alike", async () => {
    for (const to of ["bob@chat.test", "nobody@chat.test", "postmaster@chat.test"]) {
      const r = await postMxdeliv(s.url, "alice@a.test", [to], PLAINTEXT);
      expect(r).toEqual({ status: 403, text: "Encryption Needed: Invalid Unencrypted Mail" });
    }
  });

  test("anti-enumeration: real, unknown, reserved and foreign recipients get the same answer", async () => {
    const answers = [];
    for (const to of ["carol@chat.test", "nobody@chat.test", "admin@chat.test", "root@chat.test", "someone@elsewhere.test"]) {
      const r = await fetch(`${s.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "alice@a.test", "X-Mail-To": to }, body: ENCRYPTED() });
      answers.push({ status: r.status, text: await r.text(), type: r.headers.get("content-type") });
    }
    expect(new Set(answers.map((a) => JSON.stringify(a))).size).toBe(1);
    expect(answers[0]).toEqual({ status: 200, text: "OK", type: "text/plain; charset=utf-8" });
    expect(maildirNew(s, "nobody@chat.test")).toEqual([]);
    expect(maildirNew(s, "admin@chat.test")).toEqual([]);
  });

  test("repeated X-Mail-To header lines and a comma list both reach every recipient", async () => {
    const before = [maildirNew(s, "carol@chat.test").length, maildirNew(s, "bob@chat.test").length];
    const body = ENCRYPTED();
    const raw = await rawHttp(s.httpPort,
      `POST /mxdeliv HTTP/1.1\r\nHost: x\r\nX-Mail-From: alice@a.test\r\nX-Mail-To: carol@chat.test\r\nX-Mail-To: bob@chat.test\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, body);
    expect(raw).toStartWith("HTTP/1.1 200");
    const r = await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test, bob@chat.test"], body);
    expect(r.status).toBe(200);
    expect(maildirNew(s, "carol@chat.test").length).toBe(before[0]! + 2);
    expect(maildirNew(s, "bob@chat.test").length).toBe(before[1]! + 2);
  });

  test("a repeated X-Madmail-Delivery-Id is answered 200 and stored once", async () => {
    const before = maildirNew(s, "carol@chat.test").length;
    const id = `dup-${crypto.randomUUID()}`;
    const results = await Promise.all([1, 2, 3].map(() => postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED(), { "X-Madmail-Delivery-Id": id })));
    results.push(await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED(), { "X-Madmail-Delivery-Id": id }));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(maildirNew(s, "carol@chat.test").length).toBe(before + 1);
  });

  // A crash between the Maildir write and the final record leaves the id pending: the retry
  // finds the copy that landed (by its name, derived from the id) instead of storing another.
  test("a retried delivery id left pending by a crash: the copy that landed is found, a missing one is written", async () => {
    const body = ENCRYPTED();
    // Ids are remembered per envelope sender: the key is "<sender>|<id>", and so is the name's.
    const key = (id: string) => `alice@a.test|${id}`;
    const stableName = (id: string) => `${createHash("sha256").update(key(id)).digest("hex").slice(0, 32)}.madmail,S=${body.length}`;
    const landed = `crash-${crypto.randomUUID()}`;
    const lost = `crash-${crypto.randomUUID()}`;
    const db = new Database(s.box.db);
    try {
      for (const id of [landed, lost]) db.run("INSERT INTO delivery_ids (id, seen_at, pending) VALUES (?, ?, 1)", [key(id), Date.now()]);
    } finally {
      db.close();
    }
    // The copy that landed was read since: the IMAP server moved it to cur/ with its flags.
    const cur = join(s.box.dir, "data", "mail", "carol@chat.test", "cur");
    mkdirSync(cur, { recursive: true });
    writeFileSync(join(cur, `${stableName(landed)}:2,S`), body);
    const before = maildirNew(s, "carol@chat.test").length;
    expect((await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], body, { "X-Madmail-Delivery-Id": landed })).status).toBe(200);
    expect(maildirNew(s, "carol@chat.test").length).toBe(before);
    expect(readdirSync(cur)).toEqual([`${stableName(landed)}:2,S`]);
    expect((await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], body, { "X-Madmail-Delivery-Id": lost })).status).toBe(200);
    expect(maildirNew(s, "carol@chat.test")).toContain(stableName(lost));
    expect(maildirNew(s, "carol@chat.test").length).toBe(before + 1);
    // Both are done now: a third try stores nothing.
    expect((await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], body, { "X-Madmail-Delivery-Id": lost })).status).toBe(200);
    expect(maildirNew(s, "carol@chat.test").length).toBe(before + 1);
    const check = new Database(s.box.db, { readonly: true });
    try {
      expect(check.query("SELECT id, pending FROM delivery_ids WHERE id IN (?, ?) ORDER BY id").all(key(landed), key(lost)))
        .toEqual([key(landed), key(lost)].sort().map((id) => ({ id, pending: 0 })));
    } finally {
      check.close();
    }
  });

  test("40 concurrent posts all land exactly once", async () => {
    const before = maildirNew(s, "carol@chat.test").length;
    const bodies = Array.from({ length: 40 }, (_, i) => Buffer.concat([Buffer.from(`X-Seq: ${i}\r\n`), ENCRYPTED()]));
    const results = await Promise.all(bodies.map((b) => postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], b)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const files = readDelivered(s, "carol@chat.test");
    expect(files.length).toBe(before + 40);
    for (let i = 0; i < 40; i++) expect(files.filter((f) => f.toString("latin1").startsWith(`X-Seq: ${i}\r\n`)).length).toBe(1);
  });

  test("507 quota when every recipient is over quota; nothing stored", async () => {
    // bob has a 10K quota; the sample is ~2.8 KB: fill it up first.
    let r = { status: 200, text: "" };
    for (let i = 0; i < 5 && r.status === 200; i++) r = await postMxdeliv(s.url, "alice@a.test", ["bob@chat.test"], ENCRYPTED());
    expect(r).toEqual({ status: 507, text: "quota" });
    const n = maildirNew(s, "bob@chat.test").length;
    expect((await postMxdeliv(s.url, "alice@a.test", ["bob@chat.test"], ENCRYPTED())).status).toBe(507);
    expect(maildirNew(s, "bob@chat.test").length).toBe(n);
    // With another recipient who has room, the answer is 200.
    expect((await postMxdeliv(s.url, "alice@a.test", ["bob@chat.test", "carol@chat.test"], ENCRYPTED())).status).toBe(200);
  });
});

describe("settings and policy apply to a running server without restart", () => {
  test("size limit: 413 message too large, also without Content-Length", async () => {
    expect((await s.box.run(["config", "set", "limits.max_message_size", "2K"])).code).toBe(0);
    try {
      const r = await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED());
      expect(r).toEqual({ status: 413, text: "message too large" });
      const chunked = await fetch(`${s.url}/mxdeliv`, {
        method: "POST",
        headers: { "X-Mail-From": "alice@a.test", "X-Mail-To": "carol@chat.test" },
        body: new ReadableStream({ start(c) { c.enqueue(ENCRYPTED()); c.close(); } }),
      });
      expect(chunked.status).toBe(413);
    } finally {
      await s.box.run(["config", "unset", "limits.max_message_size"]);
    }
    expect((await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED())).status).toBe(200);
  });

  test("block -> 403 Forbidden; accept mode lets others in; reject mode needs allow; dismiss stores nothing", async () => {
    const run = (...a: string[]) => s.box.run(["federation", ...a]);
    expect((await run("block", "evil.test")).code).toBe(0);
    expect(await postMxdeliv(s.url, "x@evil.test", ["carol@chat.test"], ENCRYPTED())).toEqual({ status: 403, text: "Forbidden" });
    expect(await postMxdeliv(s.url, "x@sub.evil.test", ["carol@chat.test"], ENCRYPTED())).toEqual({ status: 403, text: "Forbidden" });
    expect((await postMxdeliv(s.url, "x@good.test", ["carol@chat.test"], ENCRYPTED())).status).toBe(200);

    expect((await run("policy", "reject")).code).toBe(0);
    expect((await postMxdeliv(s.url, "x@good.test", ["carol@chat.test"], ENCRYPTED())).status).toBe(403);
    expect((await run("allow", "good.test")).code).toBe(0);
    expect((await postMxdeliv(s.url, "x@good.test", ["carol@chat.test"], ENCRYPTED())).status).toBe(200);
    // Local senders always pass.
    expect((await postMxdeliv(s.url, "bob@chat.test", ["carol@chat.test"], ENCRYPTED())).status).toBe(200);

    expect((await run("policy", "accept")).code).toBe(0);
    expect((await run("dismiss", "quiet.test")).code).toBe(0);
    const before = maildirNew(s, "carol@chat.test").length;
    expect(await postMxdeliv(s.url, "x@quiet.test", ["carol@chat.test"], ENCRYPTED())).toEqual({ status: 200, text: "OK" });
    expect(maildirNew(s, "carol@chat.test").length).toBe(before);
    await run("undismiss", "quiet.test");
    await run("remove", "evil.test");
    expect((await postMxdeliv(s.url, "x@evil.test", ["carol@chat.test"], ENCRYPTED())).status).toBe(200);
  });
});

function rawHttp(port: number, head: string, body: Uint8Array): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1", () => {
      sock.write(head);
      sock.write(body);
    });
    let out = "";
    sock.setEncoding("latin1");
    sock.on("data", (d) => (out += d));
    sock.on("end", () => resolve(out));
    sock.on("error", reject);
  });
}

// Last in this file: it leaves 127.0.0.1 blocked for exchanger tokens on this server.
test("wrong exchanger tokens: 401 each, the 11th within 10 minutes 429 without a lookup; mail without a token is not affected", async () => {
  for (let i = 0; i < 10; i++) {
    const r = await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED(), { Authorization: `Bearer wrong-${i}` });
    expect(r).toEqual({ status: 401, text: "unauthorized" });
  }
  expect(await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED(), { Authorization: "Bearer wrong-10" }))
    .toEqual({ status: 429, text: "too many failed attempts, try again later" });
  expect((await postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED())).status).toBe(200);
});
