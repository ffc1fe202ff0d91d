// Password checks are scrypt with 32 MiB each. Twenty submission clients logging in at once
// used to run sixteen of them side by side on the I/O thread pool and took serve (the compiled
// binary) from about 80 MB to 650 MB; now a few run at a time, the rest wait their turn.
import { afterAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { RawSmtp } from "../helpers/smtp-client.ts";
import { startServe, type ServerHandle } from "../helpers/server.ts";

let s: ServerHandle | undefined;
afterAll(async () => {
  await s?.stop();
  s?.box.cleanup();
});

const status = (pid: number, field: "VmRSS" | "VmHWM") =>
  Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN) / 1024;

test.skipIf(process.platform !== "linux")("20 logins at once: all succeed, and serve's peak memory stays far below 20 checks' worth", async () => {
  s = await startServe({ setup: [["init", "--domain", "a.test"], { args: ["user", "add", "alice@a.test", "--password-stdin"], stdin: "alicepw\n" }] });
  const before = status(s.proc.pid, "VmHWM");
  const plain = Buffer.from("\0alice@a.test\0alicepw").toString("base64");
  const bad = Buffer.from("\0alice@a.test\0wrong").toString("base64");
  const clients = await Promise.all(Array.from({ length: 20 }, () => RawSmtp.open(s!.submissionPort)));
  try {
    for (const { client } of clients) expect((await client.cmd("EHLO client.test")).code).toBe(250);
    // 18 right, 2 wrong, all asked in the same moment.
    const codes = await Promise.all(clients.map(({ client }, i) => client.cmd(`AUTH PLAIN ${i < 18 ? plain : bad}`).then((r) => r.code)));
    expect(codes).toEqual([...Array(18).fill(235), 535, 535]);
  } finally {
    for (const { client } of clients) client.close();
  }
  const peak = status(s.proc.pid, "VmHWM");
  // Twenty checks side by side would add 640 MiB; a few at a time add at most 4 × 32 MiB.
  console.log(`serve VmHWM before the logins ${Math.round(before)} MB, after ${Math.round(peak)} MB`);
  expect({ before: Math.round(before), peak: Math.round(peak), grew: peak - before < 4 * 32 + 40 }).toMatchObject({ grew: true });
}, 60_000);

test("failed logins: one log line each (for fail2ban), the third on a connection closes it (421), and an address with failures gets one check at a time", async () => {
  const t = await startServe({ setup: [["init", "--domain", "a.test"], { args: ["user", "add", "alice@a.test", "--password-stdin"], stdin: "alicepw\n" }] });
  try {
    const auth = (pw: string) => `AUTH PLAIN ${Buffer.from(`\0alice@a.test\0${pw}`).toString("base64")}`;
    const { client } = await RawSmtp.open(t.submissionPort);
    expect((await client.cmd("EHLO client.test")).code).toBe(250);
    expect((await client.cmd(auth("w1"))).code).toBe(535);
    expect((await client.cmd(auth("w2"))).code).toBe(535);
    expect(await client.cmd(auth("w3"))).toMatchObject({ code: 421, text: "4.7.0 Too many failed logins, closing connection" });
    client.close();
    for (const n of [1, 2, 3]) expect(t.logs()).toContain(`peer=127.0.0.1 AUTH failed user="alice@a.test" failures=${n}`);
    // Two guesses at once from that address: one is checked, the other refused without a check.
    const two = await Promise.all([RawSmtp.open(t.submissionPort), RawSmtp.open(t.submissionPort)]);
    for (const { client: c } of two) expect((await c.cmd("EHLO client.test")).code).toBe(250);
    const codes = await Promise.all(two.map(({ client: c }) => c.cmd(auth("w4")).then((r) => r.code)));
    expect(codes.sort()).toEqual([454, 535]);
    // The right password still logs in.
    expect((await two[0]!.client.cmd(auth("alicepw"))).code).toBe(235);
    for (const { client: c } of two) c.close();
  } finally {
    await t.stop();
    t.box.cleanup();
  }
}, 60_000);
