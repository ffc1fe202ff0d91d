// Two madmail servers on loopback: A (a.test, alice) sends, B (b.test, bob) receives. A's
// endpoint rewrite sends b.test to B's HTTP listener.
import { startServe, type ServerHandle } from "../helpers/server.ts";

export async function startPair(opts: { aSetup?: (string[] | { args: string[]; stdin: string })[]; bSetup?: string[][]; rewrite?: (b: ServerHandle) => string } = {}): Promise<{ a: ServerHandle; b: ServerHandle }> {
  const b = await startServe({ setup: [["init", "--domain", "b.test"], ["user", "add", "bob@b.test"], ["user", "add", "carol@b.test"], ...(opts.bSetup ?? [])] });
  const target = opts.rewrite ? opts.rewrite(b) : `http://127.0.0.1:${b.httpPort}/mxdeliv`;
  const a = await startServe({
    setup: [
      ["init", "--domain", "a.test"],
      { args: ["user", "add", "alice@a.test", "--password-stdin"], stdin: "alicepw\n" },
      ["endpoint-cache", "set", "b.test", target],
      ["config", "set", "queue.retry_schedule", "1s"],
      ...(opts.aSetup ?? []),
    ],
  });
  return { a, b };
}
