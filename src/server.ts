// `madmail serve`: opens the state file and runs the listeners until SIGINT/SIGTERM.
import { serve as serveHttp, type Server } from "srvx";
import { openDb } from "./db/open.ts";
import { loadConfig, type ListenAddress } from "./db/settings.ts";
import { createHttpApp } from "./http.ts";
import { log } from "./log.ts";
import { MadmailError } from "./errors.ts";

export interface ServeOptions {
  dbPath: string;
  /** Listener overrides from flags; null = off. */
  http?: ListenAddress | null;
}

export interface RunningServer {
  http: Server | null;
  stop(): Promise<void>;
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const state = await openDb(opts.dbPath);
  const config = await loadConfig(state.db);
  const httpAddr = opts.http !== undefined ? opts.http : config["listen.http"];
  let http: Server | null = null;
  if (httpAddr) {
    const app = createHttpApp({ startedAt: Date.now() });
    http = serveHttp({
      fetch: app.fetch,
      hostname: httpAddr.host,
      port: httpAddr.port,
      gracefulShutdown: false,
      silent: true,
    });
    try {
      await http.ready();
    } catch (err) {
      await state.close();
      throw new MadmailError("config", `cannot listen on ${httpAddr.host}:${httpAddr.port} (listen.http): ${(err as Error).message}`);
    }
    log.withTag("http").info(`listening on http://${httpAddr.host.includes(":") ? `[${httpAddr.host}]` : httpAddr.host}:${httpAddr.port}`);
  }
  return {
    http,
    async stop() {
      await http?.close(true);
      await state.close();
    },
  };
}
