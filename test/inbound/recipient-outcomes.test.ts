// How one message's recipients are answered when they fare differently: a copy that cannot be
// stored now, a recipient listed twice, concurrent deliveries against a quota, a Maildir whose
// new/ was removed by hand, and the log lines of clients that leave mid-message.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createConnection, type Socket } from "node:net";
import { postMxdeliv, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { RawSmtp, sendMail } from "../helpers/smtp-client.ts";
import { ENCRYPTED, maildirNew, startChatServer } from "./_fixtures.ts";

let s: ServerHandle;
beforeAll(async () => {
  s = await startChatServer({ setup: [["user", "add", "dave@chat.test"], ["user", "add", "erin@chat.test", "--quota", "6K"]] });
});
afterAll(async () => {
  await s.stop();
  s.box.cleanup();
});

const body = () => ENCRYPTED();
const maildir = (address: string) => join(s.box.dir, "data", "mail", address);
const count = (address: string) => maildirNew(s, address).length;

/** Every store for `address` fails while `run` runs: its Maildir's path is a file. */
async function unstorable<T>(address: string, run: () => Promise<T>): Promise<T> {
  rmSync(maildir(address), { recursive: true, force: true });
  mkdirSync(dirname(maildir(address)), { recursive: true });
  writeFileSync(maildir(address), "in the way\n");
  try {
    return await run();
  } finally {
    rmSync(maildir(address), { force: true });
  }
}

describe("one copy cannot be stored now, another can", () => {
  test("/mxdeliv answers 500; the retry with the same delivery id stores only the missing copy", async () => {
    const carol = count("carol@chat.test");
    const first = await unstorable("dave@chat.test", () =>
      postMxdeliv(s.url, "x@peer.test", ["dave@chat.test", "carol@chat.test"], body(), { "X-Madmail-Delivery-Id": "partial-1" }));
    expect(first).toEqual({ status: 500, text: "error" });
    expect(count("carol@chat.test")).toBe(carol + 1);
    const retry = await postMxdeliv(s.url, "x@peer.test", ["dave@chat.test", "carol@chat.test"], body(), { "X-Madmail-Delivery-Id": "partial-1" });
    expect(retry).toEqual({ status: 200, text: "OK" });
    expect(count("carol@chat.test")).toBe(carol + 1);
    expect(count("dave@chat.test")).toBe(1);
  });

  test("SMTP MX answers 451 for the whole message", async () => {
    const carol = count("carol@chat.test");
    const r = await unstorable("dave@chat.test", () =>
      sendMail(s.smtpPort, { from: "x@peer.test", to: ["dave@chat.test", "carol@chat.test"], body: body() }));
    expect(r.rcpts.map((x) => x.code)).toEqual([250, 250]);
    expect(r.data[0]).toMatchObject({ code: 451, text: "4.3.0 Temporary failure, try again later" });
    expect(count("carol@chat.test")).toBe(carol + 1);
  });

  test("LMTP answers each recipient for itself", async () => {
    const carol = count("carol@chat.test");
    const r = await unstorable("dave@chat.test", () =>
      sendMail(s.lmtpPort, { lmtp: true, from: "x@peer.test", to: ["dave@chat.test", "carol@chat.test"], body: body() }));
    expect(r.data.map((x) => x.code)).toEqual([451, 250]);
    expect(count("carol@chat.test")).toBe(carol + 1);
  });
});

describe("a recipient listed twice gets one copy", () => {
  test("LMTP: one reply per RCPT that got a 250, repeats included, in order", async () => {
    const carol = count("carol@chat.test");
    const dave = count("dave@chat.test");
    const r = await sendMail(s.lmtpPort, { lmtp: true, from: "x@peer.test", to: ["carol@chat.test", "dave@chat.test", "CAROL@chat.test", "ghost@chat.test"], body: body() });
    expect(r.rcpts.map((x) => x.code)).toEqual([250, 250, 250, 550]);
    expect(r.data.map((x) => x.code)).toEqual([250, 250, 250]);
    expect(count("carol@chat.test")).toBe(carol + 1);
    expect(count("dave@chat.test")).toBe(dave + 1);
  });

  test("/mxdeliv: the same address in other case or with a trailing dot", async () => {
    const carol = count("carol@chat.test");
    const r = await postMxdeliv(s.url, "x@peer.test", ["carol@chat.test", "CAROL@chat.test", "carol@chat.test."], body());
    expect(r.status).toBe(200);
    expect(count("carol@chat.test")).toBe(carol + 1);
    expect(s.logs()).toMatch(/\[mxdeliv\] peer=\S+ from_domain=peer\.test rcpts=1 /);
  });
});

test("ten deliveries at once do not all fit in the room left for one (quota)", async () => {
  // erin: 6 KiB quota, the sample is about 2.8 KB: two fit, ten at once must not.
  const size = body().length;
  const answers = await Promise.all(Array.from({ length: 10 }, () => postMxdeliv(s.url, "x@peer.test", ["erin@chat.test"], body())));
  const stored = answers.filter((a) => a.status === 200).length;
  expect(stored).toBe(Math.floor(6144 / size));
  expect(answers.filter((a) => a.status === 507)).toHaveLength(10 - stored);
  expect(count("erin@chat.test")).toBe(stored);
});

test("new/ removed by hand while serve runs: the next delivery makes it again", async () => {
  expect((await postMxdeliv(s.url, "x@peer.test", ["dave@chat.test"], body())).status).toBe(200);
  rmSync(join(maildir("dave@chat.test"), "new"), { recursive: true });
  expect((await postMxdeliv(s.url, "x@peer.test", ["dave@chat.test"], body())).status).toBe(200);
  expect(count("dave@chat.test")).toBe(1);
});

describe("clients that leave mid-message: one log line, no error, nothing stored", () => {
  test("SMTP", async () => {
    const carol = count("carol@chat.test");
    const { client } = await RawSmtp.open(s.smtpPort);
    await client.cmd("EHLO peer.test");
    await client.cmd("MAIL FROM:<x@peer.test>");
    await client.cmd("RCPT TO:<carol@chat.test>");
    expect((await client.cmd("DATA")).code).toBe(354);
    client.write("Subject: half\r\n\r\nhalf a mess");
    await Bun.sleep(100);
    client.close();
    const line = await waitForLog(/\[smtp\] peer=\S+ connection closed during DATA, nothing stored/);
    expect(line).not.toContain("ERROR");
    expect(count("carol@chat.test")).toBe(carol);
  });

  test("/mxdeliv", async () => {
    const carol = count("carol@chat.test");
    const sock = await Bun.connect({ hostname: "127.0.0.1", port: s.httpPort, socket: { data() {} } });
    sock.write(`POST /mxdeliv HTTP/1.1\r\nHost: x\r\nX-Mail-From: x@peer.test\r\nX-Mail-To: carol@chat.test\r\nContent-Length: 5000\r\n\r\n${"a".repeat(1000)}`);
    await Bun.sleep(100);
    sock.end();
    const line = await waitForLog(/\[mxdeliv\] peer=\S+ upload ended early, nothing stored: .+/);
    expect(line).not.toContain("ERROR");
    expect(count("carol@chat.test")).toBe(carol);
  });
});

async function waitForLog(re: RegExp): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const line = s.logs().split("\n").find((l) => re.test(l));
    if (line) return line;
    await Bun.sleep(50);
  }
  throw new Error(`no log line matching ${re} in:\n${s.logs()}`);
}

test("a delivery id is a repeat only from the same envelope sender: another peer's message with the same id is stored", async () => {
  const carol = count("carol@chat.test");
  const id = { "X-Madmail-Delivery-Id": "01reused-id" };
  expect((await postMxdeliv(s.url, "x@peer-one.test", ["carol@chat.test"], body(), id)).status).toBe(200);
  expect((await postMxdeliv(s.url, "z@other-peer.test", ["carol@chat.test"], body(), id)).status).toBe(200);
  expect(count("carol@chat.test")).toBe(carol + 2);
  // The same sender again (a retry; case does not matter): stored once.
  expect((await postMxdeliv(s.url, "X@Peer-One.test", ["carol@chat.test"], body(), id)).status).toBe(200);
  expect(count("carol@chat.test")).toBe(carol + 2);
  expect(s.logs()).toContain("from_domain=peer-one.test rcpts=1 size=");
});

test("bodies held in memory at once are bounded (8 x limits.max_message_size): one more upload gets 503, and works again when the others are done", async () => {
  await s.box.run(["config", "set", "limits.max_message_size", "1M"]);
  const upload = (bytes: number) => {
    const sock = createConnection({ host: "127.0.0.1", port: s.httpPort });
    sock.on("error", () => {});
    sock.write(`POST /mxdeliv HTTP/1.1\r\nHost: x\r\nX-Mail-From: x@peer.test\r\nX-Mail-To: carol@chat.test\r\nContent-Length: ${1024 * 1024}\r\n\r\n${"a".repeat(bytes)}`);
    return sock;
  };
  // Announced but not sent, the bytes hold nothing: uploads that send only their headers cannot
  // shut the door for everyone.
  let socks = Array.from({ length: 12 }, () => upload(3));
  try {
    await Bun.sleep(300);
    expect((await postMxdeliv(s.url, "x@peer.test", ["carol@chat.test"], body())).status).toBe(200);
  } finally {
    for (const sock of socks) sock.destroy();
  }
  // Eight uploads of a declared 1 MiB that send 1,000,000 bytes of it and then wait: 8 MB held
  // of the 8 MiB; a 400 KB message more does not fit.
  socks = Array.from({ length: 8 }, () => upload(1_000_000));
  const big = "a".repeat(400_000);
  try {
    await waitUntil("the bytes held", async () => (await postMxdeliv(s.url, "x@peer.test", ["carol@chat.test"], big)).status === 503 || undefined);
    expect(await postMxdeliv(s.url, "x@peer.test", ["carol@chat.test"], big)).toEqual({ status: 503, text: "busy, try again later" });
  } finally {
    for (const sock of socks) sock.end();
  }
  await waitForLog(/upload ended early/);
  await Bun.sleep(200);
  expect((await postMxdeliv(s.url, "x@peer.test", ["carol@chat.test"], body())).status).toBe(200);
  await s.box.run(["config", "unset", "limits.max_message_size"]);
});

test("the SMTP doors share that bound: DATA beyond it is answered 451 4.3.1, and works again when the others are done", async () => {
  await s.box.run(["config", "set", "limits.max_message_size", "1M"]);
  // The SMTP doors take the new size within a second.
  await waitUntil("EHLO SIZE 1048576", async () => {
    const { client } = await RawSmtp.open(s.smtpPort);
    const ehlo = await client.cmd("EHLO peer.test");
    client.close();
    return ehlo.text.includes("SIZE 1048576");
  }, 10_000);
  // node:net buffers what the kernel does not take at once (Bun.connect's write does not).
  const socks: Socket[] = [];
  const line = `${"a".repeat(998)}\r\n`;
  try {
    // Nine transactions that send 1,000,000 bytes of DATA each and then wait: 8 MiB is the bound.
    for (let i = 0; i < 9; i++) {
      const sock = createConnection({ host: "127.0.0.1", port: s.smtpPort });
      sock.on("error", () => {});
      socks.push(sock);
      await new Promise((r) => sock.once("data", r)); // the greeting: who talks first is cut off
      sock.write("EHLO peer.test\r\nMAIL FROM:<x@peer.test>\r\nRCPT TO:<carol@chat.test>\r\nDATA\r\n");
    }
    await Bun.sleep(300);
    for (const sock of socks) sock.write(line.repeat(1000));
    // Once smtp-server has read at least eight of the nine megabytes (how much of the ninth is
    // taken depends on how it is cut into chunks), a 420 KB message no longer fits.
    const big = `Subject: big\r\n\r\n${line.repeat(420)}`;
    const r = await waitUntil("the bound reached", async () => {
      const x = await sendMail(s.smtpPort, { from: "x@peer.test", to: ["carol@chat.test"], body: big });
      return x.data[0]!.code === 451 ? x : undefined;
    }, 15_000);
    expect(r.data[0]).toMatchObject({ code: 451, text: "4.3.1 Insufficient system resources, try again later" });
    expect(s.logs()).toMatch(/WARN \[smtp\] peer=\S+ DATA answered 451 4\.3\.1: \d+ bytes of messages already in memory/);
  } finally {
    for (const sock of socks) sock.destroy();
  }
  await Bun.sleep(300);
  const ok = await sendMail(s.smtpPort, { from: "x@peer.test", to: ["carol@chat.test"], body: body() });
  expect(ok.data[0]!.code).toBe(250);
  await s.box.run(["config", "unset", "limits.max_message_size"]);
  await Bun.sleep(1200);
}, 30_000);
