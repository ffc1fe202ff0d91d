// How the queue reads what a peer answers, against scripted peers on real sockets: per-recipient
// 4xx and 5xx at RCPT, a smarthost that does not offer STARTTLS or refuses our password, and a
// peer that trickles its answer past delivery.timeout.
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SMTPServer } from "smtp-server";
import { havePeers, makeCert } from "../helpers/peers.ts";
import { startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew } from "../inbound/_fixtures.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A smarthost that answers RCPT by the local part: busy -> 451, ghost -> 550 5.1.1, else 250. */
async function scriptedSmarthost(opts: { auth?: boolean } = {}): Promise<{ port: number; got: { rcpts: string[] }[] }> {
  const got: { rcpts: string[] }[] = [];
  const server = new SMTPServer({
    logger: false, disabledCommands: ["STARTTLS", ...(opts.auth ? [] : ["AUTH"])], authOptional: !opts.auth, allowInsecureAuth: true,
    onAuth: (_a, _s, cb) => cb(Object.assign(new Error("5.7.8 Authentication credentials invalid"), { responseCode: 535 })),
    onRcptTo(addr, _s, cb) {
      const local = addr.address.split("@")[0];
      if (local === "busy") return cb(Object.assign(new Error("4.2.1 mailbox busy, try later"), { responseCode: 451 }));
      if (local === "ghost") return cb(Object.assign(new Error("5.1.1 no such user"), { responseCode: 550 }));
      cb();
    },
    onData(stream, session, cb) {
      stream.resume();
      stream.on("end", () => {
        got.push({ rcpts: session.envelope.rcptTo.map((r) => r.address) });
        cb();
      });
    },
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.server.address() as { port: number }).port, got };
}

async function sender(setup: string[][]): Promise<ServerHandle> {
  const a = await startServe({
    setup: [
      ["init", "--domain", "a.test"],
      ["user", "add", "alice@a.test"],
      ["config", "set", "queue.retry_schedule", "1h"],
      ...setup,
    ],
  });
  cleanups.push(async () => (await a.stop(), a.box.cleanup()));
  return a;
}

const send = (a: ServerHandle, to: string[]) => a.box.run(["send", "--from", "alice@a.test", ...to.flatMap((t) => ["--to", t])], { stdin: ENCRYPTED() });
const rows = async (a: ServerHandle) => JSON.parse((await a.box.run(["queue", "list", "--json"])).stdout) as { id: string; state: string; rcpts: string[]; last_error: string | null; tries: number }[];

test("RCPT answered 451 for one, 550 for another: the taken one is delivered, the 451 one stays queued alone, the 550 one bounces with the peer's status", async () => {
  const peer = await scriptedSmarthost();
  const a = await sender([["config", "set", "relay.smarthost", `127.0.0.1:${peer.port}`], ["config", "set", "relay.smarthost_tls", "none"]]);
  expect((await send(a, ["ok@far.test", "busy@far.test", "ghost@far.test"])).code).toBe(0);
  const [row] = await waitUntil("deferred row", async () => {
    const r = await rows(a);
    return r.length === 1 && r[0]!.state === "deferred" ? r : undefined;
  });
  expect(row).toMatchObject({ rcpts: ["busy@far.test"], tries: 1 });
  expect(row!.last_error).toContain("1 of 3 recipients deferred: 451 4.2.1 mailbox busy");
  expect(peer.got).toEqual([{ rcpts: ["ok@far.test"] }]);
  // The bounce, for ghost only, names the entry `queue show` takes and the peer's own status.
  const dsn = await waitUntil("bounce", () => {
    const f = maildirNew(a, "alice@a.test");
    return f.length === 1 ? readFileSync(join(a.box.dir, "data", "mail", "alice@a.test", "new", f[0]!), "latin1") : undefined;
  });
  expect(dsn).toContain("Final-Recipient: rfc822; ghost@far.test");
  expect(dsn).toContain("Status: 5.1.1");
  expect(dsn).toContain("Diagnostic-Code: smtp; 550 5.1.1 no such user");
  expect(dsn).not.toContain("busy@far.test");
  expect(dsn).toContain(`X-Madmail-Queue-ID: ${row!.id}`);
  const shown = JSON.parse((await a.box.run(["queue", "show", row!.id, "--json"])).stdout) as { attempts: { transport: string; endpoint: string; outcome: string; detail: string }[] };
  expect(shown.attempts.filter((x) => x.transport === "rcpt").map((x) => [x.endpoint, x.outcome, x.detail])).toEqual([
    ["ghost@far.test", "permanent", "550 5.1.1 no such user"],
    ["busy@far.test", "temporary", "451 4.2.1 mailbox busy, try later"],
  ]);
});

test("every recipient refused for good at RCPT: dead at once, one bounce", async () => {
  const peer = await scriptedSmarthost();
  const a = await sender([["config", "set", "relay.smarthost", `127.0.0.1:${peer.port}`], ["config", "set", "relay.smarthost_tls", "none"]]);
  await send(a, ["ghost@far.test"]);
  const [row] = await waitUntil("dead row", async () => ((r) => (r[0]?.state === "dead" ? r : undefined))(await rows(a)));
  expect(row!.last_error).toContain("every recipient refused: 550 5.1.1 no such user");
  await waitUntil("bounce", () => maildirNew(a, "alice@a.test").length === 1);
});

test("smarthost without STARTTLS while starttls is required, and a wrong smarthost password: deferred (not bounced), saying which step failed", async () => {
  const plain = await scriptedSmarthost();
  const a = await sender([["config", "set", "relay.smarthost", `127.0.0.1:${plain.port}`]]); // relay.smarthost_tls: starttls (default)
  await send(a, ["ok@far.test"]);
  const [row] = await waitUntil("deferred row", async () => ((r) => (r[0]?.state === "deferred" ? r : undefined))(await rows(a)));
  expect(row!.last_error).toMatch(/STARTTLS/);
  const auth = await scriptedSmarthost({ auth: true });
  await a.box.run(["config", "set", "relay.smarthost", `127.0.0.1:${auth.port}`]);
  await a.box.run(["config", "set", "relay.smarthost_tls", "none"]);
  await a.box.run(["config", "set", "relay.smarthost_user", "relay@a.test"]);
  await a.box.run(["config", "set", "relay.smarthost_password", "wrong"]);
  await a.box.run(["queue", "retry", "--all"]);
  await waitUntil("second try", async () => ((r) => (r[0]?.tries === 2 ? r : undefined))(await rows(a)));
  const [after] = await rows(a);
  expect(after).toMatchObject({ state: "deferred" });
  expect(after!.last_error).toMatch(/AUTH (PLAIN|LOGIN): 535 5\.7\.8/);
  expect(maildirNew(a, "alice@a.test")).toEqual([]);
  expect(plain.got.length + auth.got.length).toBe(0);
});

test("delivery.timeout caps the whole attempt: a peer trickling its answer is cut off", async () => {
  // Reads the request, then sends a byte of its answer every 300 ms, never finishing.
  const timers: ReturnType<typeof setInterval>[] = [];
  const trickle = Bun.listen({
    hostname: "127.0.0.1", port: 0,
    socket: {
      data(sock) {
        if (timers.length) return;
        sock.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        timers.push(setInterval(() => sock.write("x"), 300));
      },
      close() {
        for (const t of timers.splice(0)) clearInterval(t);
      },
    },
  });
  cleanups.push(() => {
    for (const t of timers.splice(0)) clearInterval(t);
    trickle.stop(true);
  });
  const a = await sender([["endpoint-cache", "set", "far.test", `http://127.0.0.1:${trickle.port}/mxdeliv`], ["config", "set", "delivery.timeout", "2s"]]);
  const t0 = Date.now();
  await send(a, ["ok@far.test"]);
  const [row] = await waitUntil("deferred row", async () => ((r) => (r[0]?.state === "deferred" ? r : undefined))(await rows(a)), 20_000);
  expect(Date.now() - t0).toBeLessThan(6000);
  expect(row!.last_error).toContain("timed out after 2 s (delivery.timeout)");
});

test("a host whose HTTPS and HTTP stall still gets its SMTP attempt (a timeout is no sign the host is unreachable)", async () => {
  // One port, three faces: a client that speaks first (TLS hello, HTTP request) is left hanging;
  // one that waits for a greeting gets an SMTP server.
  const got: string[] = [];
  const smtp = Bun.listen<{ spoke: boolean; smtp: boolean; data: boolean; buf: string }>({
    hostname: "127.0.0.1", port: 0,
    socket: {
      open(sock) {
        sock.data = { spoke: false, smtp: false, data: false, buf: "" };
        setTimeout(() => {
          if (!sock.data.spoke) sock.write("220 stall.test ESMTP\r\n");
        }, 300);
      },
      data(sock, chunk) {
        const st = sock.data;
        if (st.spoke || (!st.smtp && !/^(EHLO|HELO) /i.test(chunk.toString("latin1")))) return void (st.spoke = true);
        st.smtp = true;
        st.buf += chunk.toString("latin1");
        for (let i = st.buf.indexOf("\r\n"); i >= 0; i = st.buf.indexOf("\r\n")) {
          const line = st.buf.slice(0, i);
          st.buf = st.buf.slice(i + 2);
          if (st.data) {
            if (line === ".") {
              st.data = false;
              got.push("message");
              sock.write("250 2.0.0 queued\r\n");
            }
          } else if (/^(EHLO|HELO)/i.test(line)) sock.write("250 stall.test\r\n");
          else if (/^DATA/i.test(line)) {
            st.data = true;
            sock.write("354 go on\r\n");
          } else if (/^QUIT/i.test(line)) sock.end("221 bye\r\n");
          else sock.write("250 ok\r\n");
        }
      },
    },
  });
  cleanups.push(() => smtp.stop(true));
  const a = await sender([["endpoint-cache", "set", "far.test", `127.0.0.1:${smtp.port}`], ["config", "set", "delivery.timeout", "2s"]]);
  await send(a, ["ok@far.test"]);
  const delivered = async () => JSON.parse((await a.box.run(["queue", "list", "--state", "delivered", "--json"])).stdout) as { id: string; tries: number }[];
  const [row] = await waitUntil("delivered row", async () => ((r) => (r.length ? r : undefined))(await delivered()), 20_000);
  expect(row!.tries).toBe(1);
  expect(got).toEqual(["message"]);
  const show = (await a.box.run(["queue", "show", row!.id])).stdout;
  expect(show).toContain("timed out after 2 s (delivery.timeout)");
  expect(show).not.toContain("unreachable");
});

test("a group over one POST: a part failing for now after one was taken leaves only the rest queued, for this peer again", async () => {
  const posts: { id: string; rcpts: number; status: number }[] = [];
  let failSecond = true;
  const peer = Bun.serve({
    hostname: "127.0.0.1", port: 0,
    async fetch(req) {
      await req.arrayBuffer();
      const rcpts = (req.headers.get("x-mail-to") ?? "").split(",").length;
      const status = posts.length === 1 && failSecond ? 500 : 200;
      posts.push({ id: req.headers.get("x-madmail-delivery-id") ?? "", rcpts, status });
      return new Response(status === 200 ? "OK" : "busy", { status });
    },
  });
  cleanups.push(() => peer.stop(true));
  // A host rewrite: SMTP (here: nothing that answers) is among the candidates after HTTP.
  const a = await sender([["endpoint-cache", "set", "far.test", `127.0.0.1:${peer.port}`]]);
  const group = Array.from({ length: 250 }, (_, i) => `m${i}@far.test`);
  expect((await send(a, group)).code).toBe(0);
  const [row] = await waitUntil("deferred row", async () => ((r) => (r[0]?.state === "deferred" ? r : undefined))(await rows(a)), 20_000);
  expect(row!.rcpts).toEqual(group.slice(100));
  expect(posts.map((p) => [p.rcpts, p.status])).toEqual([[100, 200], [100, 500]]);
  failSecond = false;
  expect((await a.box.run(["queue", "flush"])).code).toBe(0);
  await waitUntil("delivered", async () => ((await rows(a)).length === 0 ? true : undefined), 20_000);
  expect(posts.slice(2).map((p) => [p.rcpts, p.status])).toEqual([[100, 200], [50, 200]]);
  // The second try's parts are named by their recipients: the part that failed comes back
  // under the name it had, the first part never again.
  expect(posts[2]!.id).toBe(posts[1]!.id);
  expect(new Set(posts.map((p) => p.id)).size).toBe(3);
});

test.skipIf(!havePeers().openssl)("a certificate that does not check out: deferred, naming the host and delivery.tls_verify; a NUL in a reply is kept visible", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mm-cert-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const { cert, key } = await makeCert(dir, "peer.test");
  const tlsPeer = Bun.serve({ hostname: "127.0.0.1", port: 0, tls: { cert: Bun.file(cert), key: Bun.file(key) }, fetch: () => new Response("OK") });
  const nul = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("busy\0now", { status: 503 }) });
  cleanups.push(() => (tlsPeer.stop(true), nul.stop(true)));
  const a = await sender([
    ["endpoint-cache", "set", "far.test", `https://localhost:${tlsPeer.port}/mxdeliv`],
    ["endpoint-cache", "set", "nul.test", `http://127.0.0.1:${nul.port}/mxdeliv`],
  ]);
  await send(a, ["ok@far.test", "ok@nul.test"]);
  const all = await waitUntil("two deferred rows", async () => ((r) => (r.length === 2 && r.every((x) => x.state === "deferred") ? r : undefined))(await rows(a)), 20_000);
  const far = all.find((r) => r.rcpts[0] === "ok@far.test")!;
  expect(far.last_error).toContain("the certificate of localhost was not accepted: see delivery.tls_verify");
  expect(all.find((r) => r.rcpts[0] === "ok@nul.test")!.last_error).toContain("503 busy\\x00now");
});

test("submission and send refuse an unknown local recipient instead of dropping it", async () => {
  const a = await sender([]);
  const r = await send(a, ["nobody@a.test"]);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("nobody@a.test: 550 5.1.1 User unknown");
  expect(await rows(a)).toEqual([]);
});
