// Shared set-up for inbound tests: a server with one local domain and two users.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { startServe, type ServerHandle, type StartOptions } from "../helpers/server.ts";

export const SAMPLES = resolve(import.meta.dir, "../fixtures/samples");
export const sample = (name: string) => readFileSync(join(SAMPLES, name));
export const ENCRYPTED = () => sample("pass-deltachat-2.57-chat.eml");
/** The Delta Chat sample as `address` sends it (submission wants From: to be the logged-in user). */
export const ENCRYPTED_FROM = (address: string) =>
  Buffer.from(ENCRYPTED().toString("latin1").replace(/^From: .*$/m, `From: <${address}>`), "latin1");
export const PLAINTEXT = "From: <alice@a.test>\r\nTo: <bob@chat.test>\r\nSubject: hi\r\n\r\nplain text\r\n";

export async function startChatServer(opts: StartOptions & { quota?: string } = {}): Promise<ServerHandle> {
  return startServe({
    ...opts,
    setup: [
      ["init", "--domain", "chat.test"],
      ["user", "add", "bob@chat.test", ...(opts.quota ? ["--quota", opts.quota] : [])],
      ["user", "add", "carol@chat.test"],
      ...(opts.setup ?? []),
    ],
  });
}

/** Files delivered into new/ of a user's Maildir. */
export function maildirNew(server: ServerHandle, address: string): string[] {
  const dir = join(server.box.dir, "data", "mail", address, "new");
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

export function readDelivered(server: ServerHandle, address: string): Buffer[] {
  const dir = join(server.box.dir, "data", "mail", address, "new");
  return maildirNew(server, address).map((f) => readFileSync(join(dir, f)));
}
