// `madmail serve`: opens the state file and runs every enabled listener until stopped.
import { EventEmitter } from "node:events";
import { join } from "node:path";
import { serve as serveHttp, type Server } from "srvx";
import { openDb } from "./db/open.ts";
import type { ListenAddress } from "./db/settings.ts";
import { createWriteBatcher } from "./db/write-batcher.ts";
import { createHttpApp } from "./http.ts";
import { createAcceptor } from "./inbound/accept.ts";
import { mountMxdeliv } from "./inbound/mxdeliv.ts";
import { startSmtpDoor, type SmtpDoor } from "./inbound/smtp.ts";
import { createSnapshotSource } from "./inbound/snapshot.ts";
import { createMaildirStore } from "./store/mailbox-store.ts";
import { log, setLogFormat, type LogFormat } from "./log.ts";
import { MadmailError } from "./errors.ts";

export type ListenerName = "http" | "smtp" | "lmtp";

export interface ServeOptions {
  dbPath: string;
  /** Listener overrides from flags (undefined = use the setting; null = off). */
  listen?: Partial<Record<ListenerName, ListenAddress | null>>;
  /** From --log-format; else the log.format setting. */
  logFormat?: LogFormat;
}

export interface RunningServer {
  http: Server | null;
  smtp: SmtpDoor | null;
  lmtp: SmtpDoor | null;
  stop(): Promise<void>;
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const state = await openDb(opts.dbPath);
  const snapshot = createSnapshotSource(state);
  const { config } = await snapshot.get();
  setLogFormat(opts.logFormat ?? config["log.format"]);
  const addr = (name: ListenerName) => (opts.listen?.[name] !== undefined ? opts.listen[name]! : config[`listen.${name}`]);
  const store = createMaildirStore({ root: config.mail_root || join(state.dataDir, "mail"), uid: config["mail.uid"], gid: config["mail.gid"] });
  const writes = createWriteBatcher(state.db);
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const acceptor = createAcceptor({ db: state.db, snapshot, store, writes, events });
  const tls = config["tls.cert"] && config["tls.key"] ? { cert: config["tls.cert"], key: config["tls.key"] } : null;

  const running: RunningServer = { http: null, smtp: null, lmtp: null, stop };
  const stops: (() => Promise<void>)[] = [];
  async function stop(): Promise<void> {
    for (const s of stops.reverse()) await s().catch((err) => log.warn(err));
    await writes.drain();
    await store.dispose();
    await state.close();
  }

  try {
    const httpAddr = addr("http");
    if (httpAddr) {
      const app = createHttpApp({ startedAt: Date.now() });
      mountMxdeliv(app, acceptor, snapshot);
      const http = await listenOrExplain("http", httpAddr, () =>
        serveHttp({ fetch: app.fetch, hostname: httpAddr.host, port: httpAddr.port, gracefulShutdown: false, silent: true }).ready(),
      );
      running.http = http;
      stops.push(() => http.close(true));
      log.withTag("http").info(`listening on ${http.url ?? `${httpAddr.host}:${httpAddr.port}`}`);
    }
    for (const kind of ["smtp", "lmtp"] as const) {
      const a = addr(kind);
      if (!a) continue;
      const door = await listenOrExplain(kind, a, () =>
        startSmtpDoor({ kind, listen: a, hostname: config.hostname, maxSize: config["limits.max_message_size"], tls, db: state.db, acceptor, snapshot }),
      );
      running[kind] = door;
      stops.push(() => door.close());
    }
  } catch (err) {
    await stop();
    throw err;
  }

  // Forget delivery ids older than the window, hourly.
  const prune = setInterval(() => {
    snapshot.get().then((s) =>
      writes.run(async (trx) => {
        await trx.deleteFrom("delivery_ids").where("seen_at", "<", Date.now() - s.config["mxdeliv.dedup_window"] * 1000).execute();
      }),
    ).catch((err) => log.warn(`pruning delivery ids: ${(err as Error).message}`));
  }, 3600_000);
  prune.unref();
  stops.unshift(async () => clearInterval(prune));
  return running;
}

async function listenOrExplain<T>(name: ListenerName, a: ListenAddress, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    throw new MadmailError("config", `cannot listen on ${a.host}:${a.port} for ${name} (setting listen.${name}, flag --${name}): ${(err as Error).message}`);
  }
}
