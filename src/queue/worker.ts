// The queue worker: claims due deliveries with a lease (a crash means the lease runs out and
// the row is retried, never lost), asks the router where they go, runs the transports in order
// and records the outcome. Global and per-destination parallelism are settings. New rows wake
// it at once; rows changed by the CLI are seen on the next pass (at most 2 s later).
import type { EventEmitter } from "node:events";
import type { DeliveryRow } from "../db/schema.ts";
import { withWriteTransaction, type Db } from "../db/open.ts";
import type { WriteBatcher } from "../db/write-batcher.ts";
import { errorText, log } from "../log.ts";
import type { SnapshotSource } from "../inbound/snapshot.ts";
import { domainOf } from "../util/names.ts";
import { signingDomain, withoutBareCr } from "../delivery/dkim.ts";
import { startedHere } from "../inbound/types.ts";
import { candidateKey, routeDomain, type Candidate, type Route } from "../delivery/router.ts";
import { learnEndpoint } from "../delivery/endpoint-cache.ts";
import { postMxdeliv } from "../delivery/transports/mxdeliv-http.ts";
import { sendSmtp } from "../delivery/transports/smtp.ts";
import type { OutboundMessage, RecipientRefusal, TransportResult } from "../delivery/transports/types.ts";
import type { MxResult } from "../delivery/mx.ts";
import {
  claimDue, expediteDomain, reclaimOrphans, loadMessage, messageSize, nextDueAt, recordAttempts, releaseLeases, renewLease, settleDelivery,
  type AttemptRecord, type Claimed, type Outcome,
} from "./queue.repository.ts";
import type { RecentMessages } from "./recent-messages.ts";
import { createByteBudget } from "./body-bytes.ts";
import type { MessageRow } from "../db/schema.ts";
import { nextAttemptAt } from "./schedule.ts";

/** Messages at least this big count against the byte bound of bodies under way. */
const LARGE_BODY = 1024 * 1024;

/** A recipient the sender is told of in a bounce. */
export interface FailedRecipient {
  address: string;
  /** RFC 3463 status, e.g. 5.1.1. */
  status: string;
  diagnostic: string;
  remoteMta?: string;
}

export interface Bounce {
  /** Mail to the local sender that these recipients could not be reached. */
  send(c: Claimed, mailFrom: string, body: Uint8Array, failed: FailedRecipient[]): Promise<void>;
}

export interface WorkerDeps {
  db: Db;
  /** PRAGMA data_version of the state file: a CLI command (send, queue flush) changed it. */
  dataVersion?: () => number;
  writes: WriteBatcher;
  snapshot: SnapshotSource;
  events: EventEmitter;
  /** Messages just queued by this process: their first attempt need not read the body back. */
  recent?: RecentMessages;
  sign(body: Uint8Array, senderDomain: string): Promise<Uint8Array>;
  bounce: Bounce;
  track?(domain: string, transport: "https" | "http" | "smtp", ok: boolean, ms: number, error?: string): void;
  /** Tests point MX lookups at their own resolver. */
  resolveMx?: (domain: string) => Promise<MxResult>;
}

/**
 * A delivery slot taken for mail about to be queued. Its row is stored already claimed (state
 * delivering, this lease) and handed to the worker after the commit: under load that spares a
 * claim pass (two scans and an UPDATE) and a wake-up of the loop for each message.
 */
export interface Reservation {
  readonly lease: number;
  /** The row is committed: deliver it. */
  launch(row: DeliveryRow): void;
  /** The row was not stored: give the slot back. */
  cancel(): void;
}

export interface QueueWorker {
  start(): void;
  /** A slot for a new row of `domain`, or null when the worker is at a limit (or not running): then the row is stored queued and claimed as usual. */
  reserve(domain: string): Reservation | null;
  /** Stops claiming, lets in-flight deliveries finish for `graceMs`, then aborts them and releases their leases. */
  stop(graceMs: number): Promise<void>;
}

const MAX_SLEEP_MS = 2000;
/** How often the leases of long attempts are looked at (queue.lease is at least 30 s). */
const LEASE_RENEW_MS = 5000;

/**
 * A peer's words as we keep them: control characters escaped (a NUL cut the text off in the
 * state file, a newline broke `queue show`'s columns).
 */
function peerText(r: TransportResult): TransportResult {
  return /[\x00-\x08\x0a-\x1f\x7f]/.test(r.detail) ? { ...r, detail: r.detail.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`) } : r;
}

function candidateHost(c: Candidate): string {
  return c.transport === "smtp" ? c.host : new URL(c.url).hostname;
}

/**
 * Failures that say the host, not just this port, is out of reach: no route, no address. Bun
 * reports "no route to host" as ECONNREFUSED, so a refusal that took seconds counts too (a
 * real refusal comes back within milliseconds). A timeout does not: many MX hosts drop or
 * stall connections to 443 and take SMTP on 25.
 */
function hostUnreachable(detail: string, ms: number): boolean {
  if (/EHOSTUNREACH|ENETUNREACH|EHOSTDOWN|ENOTFOUND|EAI_AGAIN/.test(detail)) return true;
  return /ECONNREFUSED/.test(detail) && ms > 1500;
}

export function createQueueWorker(deps: WorkerDeps): QueueWorker {
  const inflight = new Map<string, { claimed: Claimed; done: Promise<void> }>();
  const bodies = createByteBudget();
  const perDomain = new Map<string, number>();
  const abort = new AbortController();
  let stopping = false;
  let wake: (() => void) | null = null;
  // A poke while the loop is busy (claiming) must not be lost: the next sleep returns at once.
  let poked = false;
  let loopDone: Promise<void> | null = null;
  const poke = () => (wake ? wake() : (poked = true));
  // Every slot busy: new mail cannot be claimed before a delivery finishes (which pokes), so
  // "enqueued" need not wake the loop, which would only find no slot (a thousand times a
  // second under load).
  let full = false;
  // What a claim pass may find. `open`: rows that no domain's cap holds back: rows were stored
  // queued while no slot was free, the last full pass filled every slot, another process
  // changed rows, or the loop's timer ran out (it may have missed rows coming due). `capped`:
  // domains whose due rows wait for their own cap (queue.per_destination), claimed as their
  // deliveries finish. With neither, a delivery that succeeds does not wake the loop and new
  // mail is handed over directly (reserve()).
  let open = true;
  let capped = new Set<string>();
  // What the events above changed while a pass was reading: kept when the pass's own findings replace the sets.
  let openedMeanwhile = false;
  const cappedMeanwhile = new Set<string>();
  const markOpen = () => {
    open = true;
    openedMeanwhile = true;
  };
  /** Slots `domain` may still take under queue.per_destination. */
  const roomOf = (domain: string) => limits!.perDestination - (perDomain.get(domain) ?? 0);
  const atCap = (domain: string) => !!limits && roomOf(domain) <= 0;
  /** Rows were stored queued for these domains (or unknown ones). */
  const onEnqueued = (_id?: string, domains?: string[]) => {
    let wake = !domains;
    for (const d of domains ?? []) {
      // Behind its cap already: taken when the domain's deliveries finish, not by a pass now
      // (a busy destination would otherwise cost a pass for every message queued to it).
      if (capped.has(d) || atCap(d)) {
        capped.add(d);
        cappedMeanwhile.add(d);
      } else wake = true;
    }
    if (!wake) return;
    markOpen();
    if (!full && batchFree()) poke();
  };
  let expiredCheckAt = 0;
  // Slots taken by reserve() whose rows are not committed yet; the limits as of the last pass.
  let reserved = 0;
  let limits: { concurrency: number; perDestination: number; leaseMs: number } | null = null;
  const freeSlots = () => limits!.concurrency - inflight.size - reserved;
  const holdDomain = (domain: string) => perDomain.set(domain, (perDomain.get(domain) ?? 0) + 1);
  function releaseDomain(domain: string): void {
    const n = (perDomain.get(domain) ?? 1) - 1;
    if (n > 0) perDomain.set(domain, n);
    else perDomain.delete(domain);
  }

  async function loop(): Promise<void> {
    while (!stopping) {
      const { config } = await deps.snapshot.get();
      limits = { concurrency: config["queue.concurrency"], perDestination: config["queue.per_destination"], leaseMs: config["queue.lease"] * 1000 };
      const free = freeSlots();
      full = free <= 0;
      let claimed: Claimed[] = [];
      // Woken only for capped domains: claim no more than their room, so that the pass reads
      // a few rows instead of a whole batch's worth of rows it would skip.
      const wasOpen = open;
      const limit = wasOpen ? free : Math.min(free, cappedRoom());
      if (limit > 0) {
        const now = Date.now();
        const expired = now >= expiredCheckAt;
        if (expired) expiredCheckAt = now + 1000;
        const counts = { capped: false, domains: new Set<string>() };
        openedMeanwhile = false;
        cappedMeanwhile.clear();
        try {
          // Through the group commit: the claim shares its transaction (one COMMIT, and each
          // page written once) with the outcomes and new mail of the same event-loop turn.
          // Only a committed claim is ours: rows read in a transaction whose COMMIT failed (a
          // full disk) are still queued, and launching them would send them again and again.
          let got: Claimed[] = [];
          await deps.writes.run(async (trx) => {
            counts.capped = false;
            counts.domains.clear();
            got = await claimDue(trx, limit, { leaseMs: limits!.leaseMs, holding: inflight, inFlight: perDomain, perDomain: limits!.perDestination, expired, counts });
          }, { durable: false });
          claimed = got;
          if (wasOpen) open = claimed.length === free || openedMeanwhile;
          // A pass that took all it was allowed may have left rows of the domains it was woken for.
          else if (claimed.length === limit) for (const d of capped) counts.domains.add(d);
          for (const d of cappedMeanwhile) counts.domains.add(d);
          capped = counts.domains;
          if (log.level >= 4) {
            log.withTag("queue").debug(`claim pass: ${claimed.length} of at most ${limit} (${free} slots free${wasOpen ? "" : ", for capped domains only"}); capped: ${[...capped].join(" ") || "-"}`);
          }
        } catch (err) {
          markOpen();
          log.withTag("queue").error(`claiming deliveries failed: ${(err as Error).message}`);
        }
      }
      for (const c of claimed) launch(c);
      if (claimed.length && claimed.length === free) continue;
      // Every slot is busy: nothing can be claimed before a delivery finishes, and that pokes us.
      if (free <= 0) {
        await sleep(MAX_SLEEP_MS);
        continue;
      }
      // Everything claimable is claimed. Rows still due are held back by a concurrency cap:
      // a finishing delivery pokes us. Otherwise sleep until the next row comes due.
      const next = await nextDueAt(deps.db).catch(() => null);
      const now = Date.now();
      await sleep(next === null || next <= now ? MAX_SLEEP_MS : Math.min(MAX_SLEEP_MS, next - now));
    }
  }

  /**
   * Whether enough slots are free for a claim pass to take a batch (an eighth of
   * queue.concurrency). With a backlog, a pass for every finished delivery would read and
   * commit for one row at a time; the rows wait at most for a few more to finish, or for the
   * loop's timer.
   */
  function batchFree(): boolean {
    if (!limits) return true;
    return freeSlots() >= globalBatch();
  }
  const globalBatch = () => Math.max(1, Math.floor(limits!.concurrency / 8));

  /** Slots the capped domains could take now: their room under queue.per_destination. */
  function cappedRoom(): number {
    let room = 0;
    for (const d of capped) room += Math.max(0, roomOf(d));
    return room;
  }

  /**
   * Whether a finished delivery of `domain`, whose rows wait behind its cap, should wake the
   * loop: once a batch of its slots is free (a quarter of queue.per_destination, at most the
   * global batch), for the same reason as batchFree().
   */
  function domainBatchFree(domain: string): boolean {
    if (!limits || !capped.has(domain) || freeSlots() <= 0) return false;
    return roomOf(domain) >= Math.min(Math.max(1, Math.floor(limits.perDestination / 4)), globalBatch(), freeSlots());
  }

  function reserve(domain: string): Reservation | null {
    // Rows waiting in the queue go first: new mail is handed over only when none wait that it
    // could overtake (rows of other domains held back by their caps could not go anyway).
    if (stopping || !limits || open || capped.has(domain)) return null;
    if (freeSlots() <= 0 || atCap(domain)) return null;
    reserved++;
    holdDomain(domain);
    let pending = true;
    const give = () => {
      pending = false;
      reserved--;
      releaseDomain(domain);
    };
    const lease = Date.now() + limits.leaseMs;
    return {
      lease,
      launch(row) {
        if (!pending) return;
        give();
        if (!stopping) return launch({ delivery: row, lease });
        // Shutting down: hand the row back to be retried at the next start.
        void deps.writes.run((trx) => releaseLeases(trx, [{ delivery: row, lease }]), { durable: false }).catch(() => {});
      },
      cancel() {
        if (!pending) return;
        give();
        if (open || capped.size) poke();
      },
    };
  }

  function sleep(ms: number): Promise<void> {
    if (poked) {
      poked = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      // Woken by the timer, not by a poke: rows may have come due since the last full pass.
      const t = setTimeout(() => {
        markOpen();
        done();
      }, ms);
      function done() {
        clearTimeout(t);
        wake = null;
        poked = false;
        resolve();
      }
      wake = done;
    });
  }

  function launch(c: Claimed): void {
    const domain = c.delivery.rcpt_domain;
    holdDomain(domain);
    let delivered = false;
    const done = withinBodyBudget(c, () => deliver(c))
      .then((state) => void (delivered = state === "delivered"))
      .catch(async (err) => {
        // A bug or a broken row must not sit leased for queue.lease: defer it with the error.
        log.withTag("queue").error(`delivery ${c.delivery.id} failed: ${errorText(err)}`);
        log.withTag("queue").debug(err);
        const { config, localDomains } = await deps.snapshot.get();
        const error = `internal error: ${(err as Error).message}`;
        const outcome = defer(c, config["queue.retry_schedule"], error, null);
        const settled = await settle(c, outcome, [{ deliveryId: c.delivery.id, transport: "queue", endpoint: c.delivery.rcpt_domain, outcome: "note", detail: error, ms: null }])
          .catch(() => false);
        // Given up on like any other delivery: the sender hears of it.
        if (settled && outcome.state === "dead") {
          const msg = await loadMessage(deps.db, c.delivery.message_id).catch(() => undefined);
          if (msg && hasLocalSender(msg, localDomains)) {
            // The recipients as stored; the bug may well be in them.
            let rcpts: string[] = [];
            try {
              rcpts = JSON.parse(c.delivery.rcpts) as string[];
            } catch {
              log.withTag("queue").error(`delivery ${c.delivery.id} has no readable recipient list; no bounce`);
            }
            await bounce(c, msg, rcpts.map((address) => ({ address, status: "4.4.7", diagnostic: `x-madmail; ${outcome.error}` })));
          }
        }
      })
      .finally(() => {
        inflight.delete(c.delivery.id);
        releaseDomain(domain);
        full = false;
        // After a failure, a retry comes due later: the loop looks for the next due time.
        if (!delivered) {
          markOpen();
          poke();
        } else if ((open && batchFree()) || domainBatchFree(domain)) poke();
      });
    inflight.set(c.delivery.id, { claimed: c, done });
  }

  /**
   * Runs a delivery of a large message within the byte bound of bodies under way (4 x
   * limits.max_message_size). Messages just queued in memory (recent, at most 16 MiB in all)
   * are shared by their rows and need no look-up; the size of the others is read first.
   */
  async function withinBodyBudget<T>(c: Claimed, run: () => Promise<T>): Promise<T> {
    if (deps.recent?.has(c.delivery.message_id)) return run();
    const size = await messageSize(deps.db, c.delivery.message_id);
    if (size < LARGE_BODY) return run();
    const release = await bodies.take(size, 4 * (await deps.snapshot.get()).config["limits.max_message_size"]);
    try {
      return await run();
    } finally {
      release();
      // The body and its signed copies are garbage now: collected at once, a 30 MB message to
      // 24 domains peaked at 0.8 GB instead of 1.2 GB (left to the collector's own pace).
      Bun.gc(true);
    }
  }

  /** Delivers one claimed row; the state it ends in (undefined: not recorded). */
  async function deliver(c: Claimed): Promise<Outcome["state"] | undefined> {
    const d = c.delivery;
    const t0 = performance.now();
    const snap = await deps.snapshot.get();
    const msg = deps.recent?.take(d.message_id) ?? (await loadMessage(deps.db, d.message_id));
    const rcpts = JSON.parse(d.rcpts) as string[];
    if (!msg) {
      await settle(c, { state: "dead", route: null, error: "message body missing from the queue" }, []);
      return "dead";
    }
    const route = await routeDomain(d.rcpt_domain, {
      db: deps.db, config: snap.config, rules: snap.rules, localDomains: snap.localDomains, exchangers: snap.exchangers, overrides: snap.overrides, resolveMx: deps.resolveMx,
      delivery: d,
    }).catch((err): Route => ({ kind: "temporary", reason: `routing failed: ${(err as Error).message}` }));
    const attempts: AttemptRecord[] = [];
    const note = (transport: string, endpoint: string, detail: string) =>
      attempts.push({ deliveryId: d.id, transport, endpoint, outcome: "note", detail, ms: null });
    let outcome: Outcome;
    let failed: FailedRecipient[] = [];

    switch (route.kind) {
      case "reject":
      case "permanent":
        note("router", d.rcpt_domain, route.reason);
        outcome = { state: "dead", route: null, error: route.reason };
        failed = rcpts.map((address) => ({ address, status: route.kind === "reject" ? "5.7.1" : "5.1.2", diagnostic: `x-madmail; ${route.reason}` }));
        break;
      case "dismiss":
        note("policy", d.rcpt_domain, route.reason);
        outcome = { state: "delivered", route: "dismissed" };
        break;
      case "hold":
        // Waits for the exchanger's pull (route exchanger:NAME marks it for the pull endpoint);
        // re-routed on the retry schedule in case the configuration changes.
        if (route.reroutedTo && !d.rerouted_to) note("reroute", `exchanger:${route.reroutedTo}`, `rerouted to fallback exchanger ${route.reroutedTo}`);
        outcome = { ...defer(c, snap.config["queue.retry_schedule"], route.reason, `exchanger:${route.exchanger}`), reroutedTo: route.reroutedTo };
        if (outcome.state === "dead") failed = rcpts.map((address) => ({ address, status: "4.4.7", diagnostic: `x-madmail; never pulled by exchanger ${route.exchanger}` }));
        break;
      case "temporary":
        note("router", d.rcpt_domain, route.reason);
        outcome = defer(c, snap.config["queue.retry_schedule"], route.reason, null);
        break;
      case "try": {
        if (route.reroutedTo && !d.rerouted_to) note("reroute", `exchanger:${route.reroutedTo}`, `rerouted to fallback exchanger ${route.reroutedTo}`);
        const signAs = signingDomain(msg);
        const body = signAs ? await deps.sign(msg.body, signAs) : msg.body;
        const out: OutboundMessage = { mailFrom: msg.mail_from, rcpts, body, deliveryId: d.id };
        // HTTP carries the bytes as they are. SMTP has no bare CR: on that transport a message
        // with one (binary OpenPGP, which the gate lets through) goes with CRLF there, signed
        // as such (made only when an SMTP candidate comes up).
        let smtpOut: OutboundMessage | undefined;
        const outFor = async (cand: Candidate): Promise<OutboundMessage> => {
          if (cand.transport !== "smtp") return out;
          if (!smtpOut) {
            const fixed = withoutBareCr(msg.body);
            smtpOut = fixed === msg.body ? out : { ...out, body: signAs ? await deps.sign(fixed, signAs) : fixed };
          }
          return smtpOut;
        };
        let lastPermanent: string | null = null;
        let lastTemporary: string | null = null;
        let delivered: { key: string; refused: RecipientRefusal[]; deferred: RecipientRefusal[] } | null = null;
        // A host that cannot be reached at all (no route, connect timeout) is skipped for its
        // other transports: three more waits would only delay the next MX.
        const unreachable = new Set<string>();
        for (const cand of route.candidates) {
          if (abort.signal.aborted) break;
          const key = candidateKey(cand);
          const host = candidateHost(cand);
          if (unreachable.has(host)) {
            attempts.push({ deliveryId: d.id, transport: cand.transport, endpoint: key, outcome: "note", detail: `skipped: ${host} unreachable`, ms: null });
            continue;
          }
          const t = performance.now();
          const r = peerText(await send(cand, await outFor(cand), snap.config["delivery.timeout"] * 1000, snap.config.hostname));
          const ms = Math.round(performance.now() - t);
          if (r.outcome === "temporary" && hostUnreachable(r.detail, ms)) unreachable.add(host);
          attempts.push({ deliveryId: d.id, transport: route.via === "smarthost" ? "smarthost" : cand.transport, endpoint: key, outcome: r.outcome, detail: r.detail, ms });
          // An attempt our own shutdown cut off says nothing about the peer.
          if (!abort.signal.aborted) deps.track?.(d.rcpt_domain, cand.transport, r.outcome === "delivered", ms, r.outcome === "delivered" ? undefined : r.detail);
          if (r.outcome === "delivered") {
            delivered = { key, refused: r.refused, deferred: r.deferred ?? [] };
            break;
          }
          if (r.outcome === "permanent") lastPermanent = `${key}: ${r.detail}`;
          else lastTemporary = `${key}: ${r.detail}`;
        }
        if (abort.signal.aborted && !delivered) {
          // Shutting down mid-delivery: hand the row back untouched, to be retried at start.
          await withWriteTransaction(deps.db, (trx) => releaseLeases(trx, [c]), { durable: false });
          return undefined;
        }
        if (delivered) {
          const { refused, deferred } = delivered;
          failed = refused.map((r) => refusalOf(r, delivered!.key));
          // `queue show` lists what the peer said of each recipient it did not take.
          for (const r of [...refused, ...deferred]) {
            attempts.push({ deliveryId: d.id, transport: "rcpt", endpoint: r.address, outcome: r.code >= 500 ? "permanent" : "temporary", detail: r.text, ms: null });
          }
          if (deferred.length) {
            // The peer took the others: only these stay queued, for the next attempt.
            const next = defer(c, snap.config["queue.retry_schedule"], `${deferred.length} of ${rcpts.length} recipients deferred: ${deferred[0]!.text}`, delivered.key);
            outcome = next.state === "deferred" ? { ...next, rcpts: deferred.map((r) => r.address) } : next;
            if (outcome.state === "dead") failed.push(...deferred.map((r) => ({ ...refusalOf(r, delivered!.key), diagnostic: `x-madmail; gave up after ${d.tries + 1} tries: ${r.text}` })));
          } else if (refused.length >= rcpts.length) {
            outcome = { state: "dead", route: delivered.key, error: `every recipient refused: ${refused[0]!.text}` };
          } else {
            outcome = { state: "delivered", route: delivered.key };
          }
        } else if (lastTemporary !== null) {
          outcome = defer(c, snap.config["queue.retry_schedule"], lastTemporary, route.candidates[0] ? candidateKey(route.candidates[0]) : null);
          if (outcome.state === "dead") failed = rcpts.map((address) => ({ address, status: "4.4.7", diagnostic: `x-madmail; gave up after ${d.tries + 1} tries: ${lastTemporary}` }));
        } else {
          outcome = { state: "dead", route: null, error: lastPermanent ?? "no route" };
          const status = permanentStatus(lastPermanent ?? "");
          failed = rcpts.map((address) => ({ address, status, diagnostic: `x-madmail; ${lastPermanent}` }));
        }
        if (route.reroutedTo) outcome = { ...outcome, reroutedTo: route.reroutedTo };
        if (route.learn && delivered && delivered.key !== route.learned) {
          const [transport, ...rest] = delivered.key.split(":");
          await deps.writes.run((trx) => learnEndpoint(trx, d.rcpt_domain, transport!, rest.join(":"), true), { durable: false });
        }
        break;
      }
    }

    const settled = await settle(c, outcome, attempts);
    if (!settled) return undefined;
    if (route.kind === "hold") deps.events.emit("held", route.exchanger);
    if (outcome.state === "delivered" && d.tries > 0) {
      // The destination answers again: bring its other deferred mail forward, spaced out.
      await deps.writes.run(async (trx) => void (await expediteDomain(trx, d.rcpt_domain, Date.now(), 250)), { durable: false });
      markOpen();
    }
    if (hasLocalSender(msg, snap.localDomains)) await bounce(c, msg, failed);
    log.withTag("queue").info(
      `id=${d.id} to_domain=${d.rcpt_domain} rcpts=${rcpts.length} state=${outcome.state} route=${outcome.route ?? "-"} tries=${d.tries + 1} ms=${(performance.now() - t0).toFixed(1)}` +
        (outcome.state !== "delivered" ? ` error=${JSON.stringify(outcome.error)}` : ""),
    );
    return outcome.state;
  }

  /** The DSN to the (local) sender; a failure to write it is logged, the outcome stands. */
  async function bounce(c: Claimed, msg: MessageRow, failed: FailedRecipient[]): Promise<void> {
    if (!failed.length) return;
    await deps.bounce.send(c, msg.mail_from, msg.body, failed).catch((err) =>
      log.withTag("queue").error(`bounce for ${c.delivery.id} to ${msg.mail_from} failed: ${(err as Error).message}`));
  }

  /**
   * Retried for the whole of queue.lifetime: a retry that would fall after it is moved to its
   * end (a last attempt then), and only an attempt made at or after the end gives up. Mail held
   * for a pull exchanger waits out the same span.
   */
  function defer(c: Claimed, schedule: readonly number[], error: string, route: string | null): Outcome {
    if (Date.now() >= c.delivery.expires_at) return { state: "dead", route, error: `gave up (queue.lifetime reached): ${error}` };
    const next = Math.min(nextAttemptAt(schedule, c.delivery.tries + 1), c.delivery.expires_at);
    return { state: "deferred", route, error, nextAttemptAt: next };
  }

  async function settle(c: Claimed, outcome: Outcome, attempts: AttemptRecord[]): Promise<boolean> {
    let ok = false;
    // Not durable: if a power loss takes the outcome, the row is delivered again under the
    // same delivery id, which the receiving madmail stores once. A write that fails (a full
    // disk) is tried again, the outcome kept in memory and the slot held, until it is recorded:
    // given up, the row would sit in `delivering` for queue.lease and then go out once more.
    for (let wait = 1000; ; wait = Math.min(wait * 2, 30_000)) {
      try {
        await deps.writes.run(async (trx) => {
          ok = await settleDelivery(trx, c, outcome);
          if (ok) await recordAttempts(trx, attempts);
        }, { durable: false });
        break;
      } catch (err) {
        if (stopping) throw err;
        log.withTag("queue").error(`recording the outcome of ${c.delivery.id} (${outcome.state}) failed, trying again in ${wait / 1000} s: ${errorText(err)}`);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    if (!ok) log.withTag("queue").warn(`delivery ${c.delivery.id} was changed while being delivered; its outcome (${outcome.state}) was not recorded`);
    return ok;
  }

  function send(cand: Candidate, msg: OutboundMessage, timeoutMs: number, hostname: string): Promise<TransportResult> {
    if (cand.transport === "smtp") {
      return sendSmtp(msg, { host: cand.host, port: cand.port, name: hostname, tls: cand.tls, verifyTls: cand.verifyTls, timeoutMs, auth: cand.auth, signal: abort.signal });
    }
    return postMxdeliv(msg, { url: cand.url, verifyTls: cand.verifyTls, timeoutMs, signal: abort.signal, bearer: cand.bearer });
  }

  // Mail queued or rows changed by another process (`madmail send`, `queue flush`): look
  // within a quarter second instead of at the next pass.
  let seenVersion = deps.dataVersion?.() ?? 0;
  const watch = setInterval(() => {
    const v = deps.dataVersion?.() ?? 0;
    if (v !== seenVersion) {
      seenVersion = v;
      markOpen();
      poke();
    }
  }, 250);
  watch.unref();

  // An attempt may outlast queue.lease (a slow peer, within delivery.timeout): its lease is
  // extended while it runs, so that `queue show`, hold and delete see it in flight and do not
  // take it from under the delivery.
  const renew = setInterval(() => {
    if (!limits || stopping) return;
    const now = Date.now();
    const leaseMs = limits.leaseMs;
    const due = [...inflight.values()].map((f) => f.claimed).filter((c) => c.lease - now < (leaseMs * 2) / 3);
    if (!due.length) return;
    const before = due.map((c) => ({ c, lease: c.lease, delivery: c.delivery }));
    void deps.writes.run(async (trx) => {
      for (const c of due) await renewLease(trx, c, now + leaseMs);
    }, { durable: false }).catch((err) => {
      // Not written after all: the leases held are the old ones.
      for (const b of before) Object.assign(b.c, { lease: b.lease, delivery: b.delivery });
      log.withTag("queue").warn(`extending the leases of deliveries in flight failed: ${errorText(err)}`);
    });
  }, LEASE_RENEW_MS);
  renew.unref();

  return {
    reserve,
    start() {
      deps.events.on("enqueued", onEnqueued);
      // One server per state file: rows still marked delivering were claimed by a process
      // that died (kill -9, power loss). Retry them now instead of waiting out their lease.
      loopDone = reclaimOrphans(deps.db)
        .then((n) => n && log.withTag("queue").warn(`${n} deliveries were in flight when the previous server stopped; retrying them now`))
        .then(loop).catch((err) => log.withTag("queue").error(`queue worker stopped: ${(err as Error).stack ?? err}`));
    },
    async stop(graceMs) {
      stopping = true;
      clearInterval(watch);
      clearInterval(renew);
      deps.events.off("enqueued", onEnqueued);
      poke();
      await loopDone;
      const all = Promise.all([...inflight.values()].map((f) => f.done));
      const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), graceMs).unref());
      if ((await Promise.race([all.then(() => "done" as const), timer])) === "timeout") {
        log.withTag("queue").warn(`${inflight.size} deliveries still running after ${graceMs} ms; aborting them`);
        abort.abort();
        await all;
      }
    },
  };
}

/**
 * Bounces go to local senders of mail that started here only: none to remote senders, none for
 * the null sender, and none for relayed mail (relay.domains, exchanger partners), whose local
 * looking envelope sender anyone can write: it would send our users reports of mail they never
 * sent.
 */
function hasLocalSender(msg: MessageRow, localDomains: ReadonlySet<string>): boolean {
  return startedHere(msg) && !!msg.mail_from && localDomains.has(domainOf(msg.mail_from));
}

/**
 * The RFC 3463 status of a delivery refused for good: the peer's enhanced code when it gave
 * one, else what its HTTP status means (413 too big, 403 refused by policy or the gate).
 */
function permanentStatus(detail: string): string {
  const enhanced = /\b5\d\d[ -](5\.\d{1,3}\.\d{1,3})\b/.exec(detail)?.[1];
  if (enhanced) return enhanced;
  const http = /: (4\d\d)\b/.exec(detail)?.[1];
  return http === "413" ? "5.3.4" : http === "403" ? "5.7.1" : "5.0.0";
}

/** A refusal for the bounce: the peer's enhanced status code when it gave one. */
function refusalOf(r: RecipientRefusal, endpoint: string): FailedRecipient {
  const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(r.text)?.[1];
  const line = /^\d{3}\b/.test(r.text) ? r.text : `${r.code} ${r.text}`;
  const host = endpoint.startsWith("smtp:") ? endpoint.slice(5).replace(/:\d+$/, "") : undefined;
  return { address: r.address, status: enhanced ?? `${Math.floor(r.code / 100)}.0.0`, diagnostic: `smtp; ${line}`, remoteMta: host };
}
