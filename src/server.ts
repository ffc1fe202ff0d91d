// `madmail serve`: opens the state file and runs every enabled listener and the queue worker
// until stopped. On SIGTERM: stop accepting, let deliveries finish (delivery.shutdown_grace),
// release leases, flush, close.
import { EventEmitter } from "node:events";
import { serve as serveHttp, type Server } from "srvx";
import { openDb, type Db, type OpenedDb } from "./db/open.ts";
import { mailRootOf, type ListenAddress } from "./db/settings.ts";
import { createWriteBatcher, type WriteBatcher } from "./db/write-batcher.ts";
import { createHttpApp } from "./http.ts";
import { createAcceptor } from "./inbound/accept.ts";
import { mountMxdeliv } from "./inbound/mxdeliv.ts";
import { mountExchangerPull } from "./exchanger/pull-endpoint.ts";
import { startPollers } from "./exchanger/poller.ts";
import { startSmtpDoor, type SmtpDoor, type SmtpDoorKind } from "./inbound/smtp.ts";
import { createSnapshotSource, type SnapshotSource } from "./inbound/snapshot.ts";
import type { Envelope } from "./inbound/types.ts";
import { createMaildirStore, type MailboxStore } from "./store/mailbox-store.ts";
import { enqueueMessage, pruneDelivered, type Enqueued } from "./queue/queue.repository.ts";
import { createRecentMessages, type RecentMessages } from "./queue/recent-messages.ts";
import { createQueueWorker, type Bounce, type QueueWorker, type Reservation } from "./queue/worker.ts";
import { buildDsn } from "./queue/dsn.ts";
import { startDkimThread } from "./delivery/dkim-thread.ts";
import { addUsedBytes, findUser } from "./store/users.repository.ts";
import { recountUsage } from "./store/usage.ts";
import { createFederationTracker, type FederationTracker } from "./stats/federation-tracker.ts";
import { errorText, log, setLogFormat, type LogFormat } from "./log.ts";
import { loadTlsMaterial, watchTlsFiles, type TlsMaterial, type TlsWatch } from "./util/tls-files.ts";
import { lockStateFile } from "./util/serve-lock.ts";
import { MadmailError } from "./errors.ts";

export type ListenerName = "http" | "https" | "smtp" | "lmtp" | "submission" | "submissions";

export interface ServeOptions {
  dbPath: string;
  /** Listener overrides from flags (undefined = use the setting; null = off). */
  listen?: Partial<Record<ListenerName, ListenAddress | null>>;
  /** From --log-format; else the log.format setting. */
  logFormat?: LogFormat;
}

export interface RunningServer {
  http: Server | null;
  doors: Partial<Record<SmtpDoorKind | "submissions", SmtpDoor>>;
  /**
   * Looks at tls.cert and tls.key now (as every minute): a renewed pair serves new connections.
   * "none" when no certificate is in use.
   */
  reloadTls(): Promise<"none" | "unchanged" | "reloaded" | "refused">;
  stop(): Promise<void>;
}

/** The parts every way in shares: `serve` and the one-shot `madmail send` both build this. */
export interface Core {
  state: OpenedDb;
  snapshot: SnapshotSource;
  store: MailboxStore;
  writes: WriteBatcher;
  events: EventEmitter;
  acceptor: ReturnType<typeof createAcceptor>;
  /** What was just queued, for the worker's first attempt. */
  recent: RecentMessages;
  /** serve's worker: new rows are handed to it directly when it has a slot. */
  setWorker(worker: Pick<QueueWorker, "reserve">): void;
}

export async function openCore(state: OpenedDb, tracker?: FederationTracker): Promise<Core> {
  const snapshot = createSnapshotSource(state);
  const { config } = await snapshot.get();
  const store = createMaildirStore({ root: mailRootOf(config, state.dataDir), uid: config["mail.uid"], gid: config["mail.gid"] });
  const writes = createWriteBatcher(state.db, { syncWal: state.syncWal });
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const recent = createRecentMessages();
  let worker: Pick<QueueWorker, "reserve"> | null = null;
  const enqueue = async (env: Envelope, byDomain: Map<string, string[]>, also?: (trx: Db) => Promise<unknown>) => {
    const lifetime = (await snapshot.get()).config["queue.lifetime"] * 1000;
    // A free delivery slot per domain, taken before the commit: those rows are stored claimed.
    const slots = new Map<string, Reservation>();
    for (const domain of byDomain.keys()) {
      const r = worker?.reserve(domain);
      if (r) slots.set(domain, r);
    }
    const leases = new Map([...slots].map(([domain, r]) => [domain, r.lease]));
    let queued: Enqueued | null = null;
    try {
      await writes.run(async (trx) => {
        queued = await enqueueMessage(trx, { mailFrom: env.mailFrom, body: env.body, door: env.door, authUser: env.authUser ?? null, byDomain }, lifetime, Date.now(), leases);
        await also?.(trx);
      });
    } catch (err) {
      for (const r of slots.values()) r.cancel();
      throw err;
    }
    const { message, deliveries } = queued!;
    recent.remember(message, deliveries.length);
    for (const row of deliveries) slots.get(row.rcpt_domain)?.launch(row);
    const queuedDomains = deliveries.filter((d) => !slots.has(d.rcpt_domain)).map((d) => d.rcpt_domain);
    if (queuedDomains.length) events.emit("enqueued", message.id, queuedDomains);
    return { messageId: message.id, deliveryIds: deliveries.map((d) => d.id) };
  };
  const acceptor = createAcceptor({ db: state.db, snapshot, store, writes, events, enqueue, onInbound: tracker && ((d) => tracker.recordInbound(d)) });
  return { state, snapshot, store, writes, events, acceptor, recent, setWorker: (w) => void (worker = w) };
}

/** On stop, how long /mxdeliv requests under way may take. */
const HTTP_CLOSE_WAIT_MS = 10_000;
/** Then, for their answers to be written before the connections close. */
const ANSWER_WRITE_MS = 20;

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  // Opening is safe next to a running server (migrations take the write lock); the queue is
  // not touched before the lock is held, so a second server changes nothing.
  const state = await openDb(opts.dbPath);
  let lock: ReturnType<typeof lockStateFile>;
  try {
    lock = lockStateFile(opts.dbPath);
  } catch (err) {
    await state.close();
    throw err;
  }
  const tracker = createFederationTracker(state.db);
  const core = await openCore(state, tracker);
  const { snapshot, store, writes, events, acceptor, recent } = core;
  const { config } = await snapshot.get();
  setLogFormat(opts.logFormat ?? config["log.format"]);
  const addr = (name: ListenerName) => (opts.listen?.[name] !== undefined ? opts.listen[name]! : config[`listen.${name}`]);
  const tlsFiles = config["tls.cert"] && config["tls.key"] ? { cert: config["tls.cert"], key: config["tls.key"] } : null;
  let tls: TlsMaterial | null = null;
  let tlsWatch: TlsWatch | null = null;
  let swapHttps: ((m: TlsMaterial) => Promise<void>) | null = null;

  const bounce: Bounce = {
    async send(c, mailFrom, body, failed) {
      const dsn = buildDsn({
        reportingHost: (await snapshot.get()).config.hostname,
        originalFrom: mailFrom,
        originalMessage: body,
        queueId: c.delivery.id, // what `queue show` takes
        arrivalDate: new Date(c.delivery.created_at),
        recipients: failed.map((f) => ({ address: f.address, action: "failed", status: f.status, diagnostic: f.diagnostic, remoteMta: f.remoteMta, lastAttemptDate: new Date() })),
      });
      // Straight into the sender's mailbox (our own report, not mail from outside), and only
      // if the sender is a user here: `madmail send` may use any address of a local domain.
      if (!(await findUser(state.db, mailFrom.toLowerCase()))) {
        log.withTag("queue").warn(`no bounce for ${c.delivery.id}: sender ${mailFrom} is not a local user`);
        return;
      }
      const to = mailFrom.toLowerCase();
      await store.deliver(to, dsn);
      // Stored whatever the quota (the sender's only news of the failure), but counted in it.
      await writes.run((trx) => addUsedBytes(trx, to, dsn.length), { durable: false })
        .catch((err) => log.withTag("queue").warn(`bounce for ${c.delivery.id}: used bytes not updated (the recount repairs it): ${errorText(err)}`));
    },
  };
  const signer = startDkimThread(state.dataDir, { logFormat: opts.logFormat ?? config["log.format"], level: log.level });
  const worker = createQueueWorker({ db: state.db, dataVersion: state.dataVersion, writes, snapshot, events, recent, sign: (body, domain) => signer.sign(body, domain), bounce,
    track: (domain, transport, ok, ms, error) => tracker.recordOutbound(domain, transport, ok, ms, error),
  });
  core.setWorker(worker);

  const running: RunningServer = { http: null, doors: {}, stop, reloadTls: async () => (tlsWatch ? tlsWatch.check() : "none") };
  // Aborted first on stop: long-polling pulls answer at once.
  const shutdown = new AbortController();
  const stops: (() => Promise<void>)[] = [];
  let stopped = false;
  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    shutdown.abort();
    tlsWatch?.stop();
    // Listeners first, all at once (no new mail), then the worker (in-flight deliveries), then
    // what the doors had begun to store, then the files.
    await Promise.all(stops.reverse().map((s) => s().catch((err) => log.warn(err))));
    await worker.stop((await snapshot.get()).config["delivery.shutdown_grace"] * 1000);
    await acceptor.idle();
    signer.close();
    await tracker.stop().catch((err) => log.warn(`federation stats: ${(err as Error).message}`));
    await writes.drain();
    await store.dispose();
    await state.close();
    lock.release();
  }

  try {
    if (!config["tls.cert"] !== !config["tls.key"]) {
      // Half a pair would mean no TLS at all: no STARTTLS, AUTH in the clear.
      const [set, unset] = config["tls.cert"] ? ["tls.cert", "tls.key"] : ["tls.key", "tls.cert"];
      throw new MadmailError("config", `${set} is set but ${unset} is empty: set both (madmail config set ${unset} PATH) or unset ${set}`);
    }
    // Checked before any listener starts, when one will use it: a wrong path or a key that
    // does not match fails here, by name.
    const usesTls = (["https", "smtp", "lmtp", "submission", "submissions"] as const).some((n) => addr(n));
    if (tlsFiles && usesTls) tls = loadTlsMaterial(tlsFiles);
    const httpAddrs = (["http", "https"] as const).filter((n) => addr(n));
    if (httpAddrs.length) {
      const app = createHttpApp({ startedAt: Date.now() });
      const mxdeliv = mountMxdeliv(app, acceptor, snapshot, state.db, shutdown.signal);
      mountExchangerPull(app, { db: state.db, snapshot, events, signal: shutdown.signal, sign: (b, d) => signer.sign(b, d), bounce });
      for (const name of httpAddrs) {
        const a = addr(name)!;
        if (name === "https" && !tls) {
          throw new MadmailError("config", "listen.https needs a certificate: set tls.cert and tls.key, or `madmail config set listen.https off`");
        }
        const listen = (m: TlsMaterial | null) => listenOrExplain(name, a, () =>
          serveHttp({
            fetch: app.fetch, hostname: a.host, port: a.port, gracefulShutdown: false, silent: true,
            // Long polls (GET /exchanger/pull?wait=60) must outlive Bun's 10 s default.
            bun: { idleTimeout: 120 },
            // srvx takes PEM text only when it starts with the armour line (else it reads a path).
            ...(m ? { tls: { cert: fromArmour(m.cert), key: fromArmour(m.key) } } : {}),
          }).ready(),
        );
        let server = await listen(name === "https" ? tls : null);
        // Listeners that stopped accepting and still finish their requests (after a certificate change).
        const retired = new Set<Server>();
        if (name === "http") running.http = server;
        else {
          // Bun cannot change the certificate of a listening server: a new one takes the port
          // (within a millisecond), the old one finishes what it has in flight.
          swapHttps = async (m) => {
            const old = server;
            retired.add(old);
            void old.close(false).catch(() => {}).finally(() => retired.delete(old));
            try {
              server = await listen(m);
            } catch (err) {
              // Taken meanwhile by someone else: at least try to serve on with the old pair.
              server = await listen(tls).catch((again) => {
                log.withTag(name).error(`the listener is down: ${(again as Error).message}; restart madmail`);
                throw err;
              });
              throw err;
            }
          };
        }
        stops.push(async () => {
          const all = [server, ...retired];
          // New requests are answered 503 (the shutdown signal); one under way is read, stored
          // and answered (a sender without a delivery id would send it again); then every
          // connection closes. (A graceful stop of Bun's server would wait for idle keep-alive
          // connections too, and a forced one after it does not force.)
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([mxdeliv.idle(), new Promise((r) => (timer = setTimeout(r, HTTP_CLOSE_WAIT_MS)))]);
          clearTimeout(timer); // a pending timer would keep the process up after the stop
          await Bun.sleep(ANSWER_WRITE_MS);
          await Promise.all(all.map((s) => s.close(true)));
        });
        log.withTag(name).info(`listening on ${server.url ?? `${a.host}:${a.port}`}`);
      }
    }
    for (const name of ["smtp", "lmtp", "submission", "submissions"] as const) {
      const a = addr(name);
      if (!a) continue;
      if (name === "submissions" && !tls) {
        throw new MadmailError("config", "listen.submissions needs a certificate: set tls.cert and tls.key, or `madmail config set listen.submissions off`");
      }
      const kind: SmtpDoorKind = name === "submissions" ? "submission" : name;
      const door = await listenOrExplain(name, a, () =>
        startSmtpDoor({
          kind, listen: a, hostname: config.hostname, maxSize: config["limits.max_message_size"], tls, implicitTls: name === "submissions",
          db: state.db, acceptor, snapshot,
        }),
      );
      running.doors[name] = door;
      stops.push(() => door.close());
    }
    if (tls) {
      const doors = Object.values(running.doors);
      tlsWatch = watchTlsFiles({
        current: tls,
        // The settings may name other files by now; without them the files in use stay watched.
        files: async () => {
          const c = (await snapshot.get()).config;
          return c["tls.cert"] && c["tls.key"] ? { cert: c["tls.cert"], key: c["tls.key"] } : tls!.files;
        },
        apply: async (m) => {
          if (swapHttps) await swapHttps(m);
          for (const d of doors) d.updateTls(m);
          tls = m;
        },
        log: log.withTag("tls"),
      });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  worker.start();
  tracker.start();
  // Pull from partners that hold our token (exchanger set NAME --remote-token-file F).
  const pollers = startPollers({ core, db: state.db });
  stops.push(() => pollers.stop());

  // Housekeeping, hourly: forget old delivery ids and delivered queue rows.
  const housekeeping = setInterval(() => {
    snapshot.get().then(({ config: c }) =>
      writes.run(async (trx) => {
        const now = Date.now();
        await trx.deleteFrom("delivery_ids").where("seen_at", "<", now - c["mxdeliv.dedup_window"] * 1000).execute();
        await pruneDelivered(trx, now - c["queue.keep_delivered"] * 1000);
      }, { durable: false }),
    ).catch((err) => log.warn(`housekeeping: ${(err as Error).message}`));
  }, 3600_000);
  housekeeping.unref();
  stops.unshift(async () => clearInterval(housekeeping));
  // Quota usage follows what Dovecot users deleted: recount now and every 10 minutes.
  const mailRoot = mailRootOf(config, state.dataDir);
  const recount = () => recountUsage(state.db, mailRoot).catch((err) => log.warn(`quota recount: ${(err as Error).message}`));
  void recount();
  const recountTimer = setInterval(recount, 600_000);
  recountTimer.unref();
  stops.unshift(async () => clearInterval(recountTimer));
  return running;
}

/** PEM text from its first armour line on (a file may start with comments or "Bag Attributes"). */
function fromArmour(pem: string): string {
  return pem.slice(Math.max(0, pem.indexOf("-----BEGIN ")));
}

async function listenOrExplain<T>(name: ListenerName, a: ListenAddress, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    if (err instanceof MadmailError) throw err;
    throw new MadmailError("config", `cannot listen on ${a.host}:${a.port} for ${name} (setting listen.${name}, flag --${name}): ${(err as Error).message}`);
  }
}
