// Bounces are for mail that started here. Mail a stranger relays through relay.domains may
// name a local user as its envelope sender (anyone can write it): when it fails, that user
// gets no report of mail they never sent. Mail the user did send still bounces.
import { afterEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew } from "../inbound/_fixtures.ts";

let a: ServerHandle | undefined;
let peer: ReturnType<typeof Bun.serve> | undefined;
afterEach(async () => {
  if (a) await a.stop().catch(() => {});
  a?.box.cleanup();
  a = undefined;
  peer?.stop(true);
});

test("relayed mail with a local-looking sender dies without a bounce; the same mail sent by the user bounces, counted in the user's used bytes", async () => {
  // h.test refuses everything for good.
  peer = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async (req) => (await req.arrayBuffer(), new Response("no such user", { status: 400 })) });
  a = await startServe({
    setup: [
      ["init", "--domain", "a.test"], ["user", "add", "alice@a.test"], ["config", "set", "relay.domains", "h.test"],
      ["endpoint-cache", "set", "h.test", `http://127.0.0.1:${peer.port}/mxdeliv`],
    ],
  });
  const rows = async () => JSON.parse((await a!.box.run(["queue", "list", "--json"])).stdout) as { state: string }[];
  const posted = await fetch(`${a.url}/mxdeliv`, { method: "POST", headers: { "X-Mail-From": "alice@a.test", "X-Mail-To": "victim@h.test" }, body: ENCRYPTED() });
  expect(posted.status).toBe(200);
  await waitUntil("dead", async () => ((r) => (r.length === 1 && r[0]!.state === "dead") || undefined)(await rows()));
  await Bun.sleep(300);
  expect(maildirNew(a, "alice@a.test")).toEqual([]);
  expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "victim@h.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  await waitUntil("the bounce", async () => (maildirNew(a!, "alice@a.test").length === 1) || undefined);
  // Counted in alice's used bytes.
  const size = Number(/,S=(\d+)/.exec(maildirNew(a, "alice@a.test")[0]!)![1]);
  await waitUntil("used bytes", async () => {
    const [u] = JSON.parse((await a!.box.run(["user", "list", "--json"])).stdout) as { used_bytes: number }[];
    return u!.used_bytes === size || undefined;
  });
});

test("a bounce for a peer's HTTP refusal carries what it means: 413 is 5.3.4 (too big), 403 is 5.7.1", async () => {
  let status = 413;
  peer = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async (req) => (await req.arrayBuffer(), new Response("refused", { status })) });
  a = await startServe({
    setup: [["init", "--domain", "a.test"], ["user", "add", "alice@a.test"], ["endpoint-cache", "set", "h.test", `http://127.0.0.1:${peer.port}/mxdeliv`]],
  });
  for (const [code, expected] of [[413, "5.3.4"], [403, "5.7.1"]] as const) {
    status = code;
    const before = maildirNew(a, "alice@a.test").length;
    expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "victim@h.test"], { stdin: ENCRYPTED() })).code).toBe(0);
    await waitUntil("the bounce", async () => (maildirNew(a!, "alice@a.test").length > before) || undefined);
    const names = maildirNew(a, "alice@a.test");
    const texts = names.map((n) => readFileSync(join(a!.box.dir, "data", "mail", "alice@a.test", "new", n), "utf8"));
    expect(texts.some((t) => t.includes(`Status: ${expected}`) && t.includes(`${code} refused`))).toBe(true);
  }
});
