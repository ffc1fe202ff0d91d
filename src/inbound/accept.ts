// The ONE accept pipeline. Every door (HTTP /mxdeliv, SMTP, LMTP, submission, pull) builds an
// Envelope and calls accept(); the steps run in the order of DESIGN.md section 4:
// size, recipient split, federation policy, encryption gate, quota, durable delivery, stats.
import { createHash } from "node:crypto";
import type { EventEmitter } from "node:events";
import type { Db } from "../db/open.ts";
import type { WriteBatcher } from "../db/write-batcher.ts";
import { changedRows, firstRow, prepareQuery } from "../db/prepared.ts";
import { errorText, log } from "../log.ts";
import { checkEncryption } from "../policy/pgp-gate.ts";
import { federationVerdict } from "../policy/federation.ts";
import { addUsedBytes, findUser } from "../store/users.repository.ts";
import { domainOf, normaliseAddress } from "../util/names.ts";
import { headerFromAddresses, headerFromDomain, isReservedLocalPart } from "./recipients.ts";
import type { SnapshotSource, Snapshot } from "./snapshot.ts";
import { startedHere, type AcceptResult, type Envelope, type LocalDelivery, type RcptVerdict } from "./types.ts";

export interface AcceptDeps {
  db: Db;
  snapshot: SnapshotSource;
  store: LocalDelivery;
  writes: WriteBatcher;
  /** Emits "delivered" (address) after each durable local delivery: wake-ups for waiters. */
  events: EventEmitter;
  /** Durably queues mail for remote recipients (one delivery row per domain); absent = no relaying. */
  /** Queues the remote recipients; `also` runs in the same transaction. */
  enqueue?: (env: Envelope, byDomain: Map<string, string[]>, also?: (trx: Db) => Promise<unknown>) => Promise<{ messageId: string; deliveryIds: string[] }>;
  /** Counts mail that arrived from a peer domain (federation stats). */
  onInbound?: (senderDomain: string) => void;
}

/** Doors through which other servers deliver to us. */
const PEER_DOORS: ReadonlySet<Envelope["door"]> = new Set(["mxdeliv", "smtp", "lmtp", "pull"]);

/**
 * Doors whose senders may send to other domains: authenticated users, the local CLI, and mail
 * pulled from a configured exchanger partner (which may be passed on).
 */
const RELAY_DOORS: ReadonlySet<Envelope["door"]> = new Set(["submission", "send", "pull"]);

type Planned =
  | { kind: "local"; address: string; quota: number; used: number }
  | { kind: "remote"; address: string; domain: string }
  | { kind: "drop"; note: "unknown_user" | "reserved" }
  | { kind: "done"; verdict: RcptVerdict };

export function createAcceptor(deps: AcceptDeps) {
  const inflight = new Map<string, Promise<AcceptResult>>();
  // Moving average of the durable-write time, used to pad answers where nothing was stored
  // so that timing does not tell an unknown recipient from a real one.
  let storeMs = 2;
  // Bytes being delivered to each user right now, not yet in used_bytes.
  const incoming = new Map<string, number>();

  // Accepts under way: on shutdown, the state file closes only after they are done.
  const running = new Set<Promise<unknown>>();
  function accept(env: Envelope): Promise<AcceptResult> {
    const p = acceptEach(env);
    running.add(p);
    void p.finally(() => running.delete(p)).catch(() => {});
    return p;
  }

  async function acceptEach(env: Envelope): Promise<AcceptResult> {
    // A recipient listed twice (in other case, with a trailing dot) gets one copy; each listing
    // gets that copy's verdict, so LMTP still answers once per RCPT.
    const keys = env.rcpts.map((r) => normaliseAddress(r) ?? r);
    if (new Set(keys).size < keys.length) {
      const slot = new Map<string, number>();
      const rcpts: string[] = [];
      keys.forEach((k, i) => slot.has(k) || slot.set(k, rcpts.push(env.rcpts[i]!) - 1));
      const r = await acceptOnce({ ...env, rcpts });
      return { ...r, rcpts: keys.map((k) => r.rcpts[slot.get(k)!]!) };
    }
    return acceptOnce(env);
  }

  async function acceptOnce(env: Envelope): Promise<AcceptResult> {
    // The sender's id, scoped to its envelope sender: another peer's message that happens to
    // (or is made to) reuse an id is a different message, not a repeat.
    if (env.deliveryId) env = { ...env, deliveryId: `${normaliseAddress(env.mailFrom) ?? env.mailFrom.toLowerCase()}|${env.deliveryId}` };
    const id = env.deliveryId;
    if (!id) return run(env);
    const running = inflight.get(id);
    if (running) return running.then((r) => duplicateResult(env, r.ms));
    const p = run(env).finally(() => inflight.delete(id));
    inflight.set(id, p);
    return p;
  }

  async function run(env: Envelope): Promise<AcceptResult> {
    const t0 = performance.now();
    const snap = await deps.snapshot.get();
    const size = env.body.length;
    const all = (v: RcptVerdict): RcptVerdict[] => env.rcpts.map(() => v);
    let verdicts: RcptVerdict[];
    let stored = 0;
    let queued: AcceptResult["queued"];

    if (size > snap.config["limits.max_message_size"]) {
      verdicts = all({ verdict: "reject", reason: "too_large", detail: `${size} bytes > limit` });
    } else {
      const senderDomain = senderDomainOf(env);
      const policy = federationVerdict(snap.rules, senderDomain, (d) => snap.localDomains.has(d));
      // One at a time: thousands of lookups started at once wait on the database's one
      // connection, and each release wakes every waiter (quadratic).
      const plan: Planned[] = [];
      for (const r of env.rcpts) plan.push(await planRecipient(env, r, snap));
      // The gate runs for every message that reaches it, whoever the recipients are, so that
      // a plaintext probe is refused the same way for real and unknown users. Delivery reports
      // pass it only from other servers: our own are written straight into the sender's
      // Maildir, and a user's "bounce" would be plaintext leaving for anywhere.
      let gate = checkEncryption(env.body);
      if (gate.pass && gate.kind === "bounce" && startedHere(env)) {
        gate = { pass: false, reason: "delivery status reports are taken from other servers only" };
      }
      const fromMismatch = env.door === "submission" && !fromIsSender(env);
      const passthrough = isPassthrough(snap, env.mailFrom);
      const idState = policy === "accept" && env.deliveryId ? await deliveryIdSeen(env.deliveryId, plan.some((p) => p.kind === "local")) : "new";
      if (policy === "reject") {
        verdicts = all({ verdict: "reject", reason: "policy", detail: `sender domain ${senderDomain ?? "(none)"} refused by federation policy` });
      } else if (fromMismatch) {
        verdicts = all({ verdict: "reject", reason: "sender_mismatch", detail: `From: header is not ${env.mailFrom}` });
      } else if (policy === "dismiss") {
        verdicts = all({ verdict: "dismiss" });
      } else if (idState === "done") {
        verdicts = all({ verdict: "accept", stored: false, note: "duplicate" });
      } else {
        // With a delivery id, local copies get a name derived from it: a retry after a crash
        // that left the id pending finds the copies that already landed.
        const fileName = env.deliveryId ? stableMaildirName(env.deliveryId, size) : undefined;
        const recovering = idState === "pending" || idState === "queued";
        const reservedHere: string[] = [];
        verdicts = await Promise.all(plan.map(async (p): Promise<RcptVerdict> => {
          if (p.kind === "done") return p.verdict;
          if (!gate.pass && !passthrough && !("address" in p && isPassthrough(snap, p.address, "recipients"))) {
            return { verdict: "reject", reason: "encryption", detail: gate.reason };
          }
          if (p.kind === "drop") return { verdict: "accept", stored: false, note: p.note };
          if (p.kind === "remote") return idState === "queued" ? { verdict: "accept", stored: false, note: "duplicate" } : { verdict: "accept", stored: true };
          // Deliveries still on their way to the same user count too: ten at once must not all
          // fit in the room left for one.
          if (p.used + (incoming.get(p.address) ?? 0) + size > p.quota) return { verdict: "reject", reason: "quota", detail: `${p.address} over quota` };
          incoming.set(p.address, (incoming.get(p.address) ?? 0) + size);
          reservedHere.push(p.address);
          try {
            const ts = performance.now();
            if (recovering && fileName && (await deps.store.read(p.address, fileName))) {
              return { verdict: "accept", stored: false, note: "duplicate" };
            }
            await deps.store.deliver(p.address, env.body, { name: fileName });
            storeMs = storeMs * 0.9 + (performance.now() - ts) * 0.1;
            stored++;
            return { verdict: "accept", stored: true };
          } catch (err) {
            log.withTag("store").error(`delivery to ${p.address} failed: ${(err as Error).message}`);
            return { verdict: "tempfail", detail: "local delivery failed" };
          }
        }));
        const remote = plan.flatMap((p, i) => {
          const v = verdicts[i]!;
          return p.kind === "remote" && v.verdict === "accept" && v.stored ? [p] : []; // not those queued already
        });
        if (remote.length) {
          const byDomain = new Map<string, string[]>();
          for (const p of remote) byDomain.set(p.domain, [...(byDomain.get(p.domain) ?? []), p.address]);
          try {
            // With a delivery id, the id is marked in the queue's own commit: without local
            // copies it is then done (a retry is a duplicate); with them, still pending.
            const id = env.deliveryId;
            const hasLocal = plan.some((p) => p.kind === "local");
            queued = await deps.enqueue!(env, byDomain, id ? (trx) => markDeliveryIdQueued(trx, { id, at: Date.now(), pending: hasLocal ? 1 : 0 }) : undefined);
            stored++;
          } catch (err) {
            log.withTag("queue").error(`queueing failed: ${(err as Error).message}`);
            verdicts = verdicts.map((v, i) => (plan[i]!.kind === "remote" ? { verdict: "tempfail", detail: "queueing failed" } : v));
          }
        }
        try {
          await recordDelivery(env, plan, verdicts, size);
        } catch (err) {
          // The copies are fsynced in their Maildirs: failing the answer now would only make the
          // sender deliver them twice. The usage recount repairs used_bytes; an id left pending
          // makes a retry look for the copies it already has.
          log.withTag("store").error(`delivered, but recording it failed (used bytes, delivery id): ${errorText(err)}`);
        } finally {
          for (const a of reservedHere) {
            const left = incoming.get(a)! - size;
            if (left > 0) incoming.set(a, left);
            else incoming.delete(a);
          }
        }
      }
    }

    if (stored === 0 && verdicts.some((v) => v.verdict === "accept" || v.verdict === "dismiss")) {
      await sleep(storeMs * (0.8 + Math.random() * 0.4));
    }
    const ms = performance.now() - t0;
    logResult(env, verdicts, ms);
    if (stored > 0 && PEER_DOORS.has(env.door)) {
      const d = senderDomainOf(env);
      if (d) deps.onInbound?.(d);
    }
    for (const [i, v] of verdicts.entries()) {
      if (v.verdict === "accept" && v.stored) deps.events.emit("delivered", normaliseAddress(env.rcpts[i]!));
    }
    return { rcpts: verdicts, ms, queued };
  }

  /** Quota accounting and the delivery id, committed (group commit) before the answer. */
  async function recordDelivery(env: Envelope, plan: Planned[], verdicts: RcptVerdict[], size: number): Promise<void> {
    const used = plan.flatMap((p, i) => (p.kind === "local" && verdicts[i]!.verdict === "accept" ? [p.address] : []));
    // Mark the delivery id done only when nothing is left to retry: after a tempfail (or a full
    // mailbox, which a pulling client leaves with its partner) it stays pending, the sender
    // retries with the same id, the recipients that failed get their copy and those that have
    // one are found in their Maildirs.
    const anyAccepted = verdicts.some((v) => v.verdict === "accept") &&
      !verdicts.some((v) => v.verdict === "tempfail" || (v.verdict === "reject" && v.reason === "quota"));
    if (!used.length && !(env.deliveryId && anyAccepted)) return;
    await deps.writes.run(async (trx) => {
      for (const a of used) await addUsedBytes(trx, a, size);
      if (env.deliveryId && anyAccepted) await markDeliveryIdDone(trx, { id: env.deliveryId, at: Date.now() });
      // The mail itself is fsynced in its Maildir; this is bookkeeping.
    }, { durable: false });
  }

  /**
   * What is known of a delivery id. With local copies to write, the id is marked pending first,
   * committed before they are written, so that after a crash between the Maildir write and the
   * final record the retry knows to look for copies that landed. That mark also tells a new id
   * from a known one: the usual case, a new id, costs no lookup.
   */
  async function deliveryIdSeen(id: string, local: boolean): Promise<DeliveryIdState> {
    if (local) {
      let marked = false;
      // Not durable: it must survive a crash of this process, which WAL gives without fsync.
      await deps.writes.run(async (trx) => void (marked = (await changedRows(markDeliveryIdPending, trx, { id, at: Date.now() })) > 0n), { durable: false });
      if (marked) return "new";
    }
    return deliveryIdState(deps.db, id);
  }

  async function planRecipient(env: Envelope, rcpt: string, snap: Snapshot): Promise<Planned> {
    const address = normaliseAddress(rcpt);
    if (!address) return { kind: "done", verdict: { verdict: "reject", reason: "bad_address", detail: `bad address ${rcpt}` } };
    const domain = domainOf(address);
    if (!snap.localDomains.has(domain)) {
      // Relaying: trusted doors, an authenticated exchanger partner, or a domain this server
      // passes on for others (relay.domains, as an exchanger).
      const relay = RELAY_DOORS.has(env.door) || env.trustedPeer !== undefined || snap.config["relay.domains"].includes(domain);
      if (relay && deps.enqueue) return { kind: "remote", address, domain };
      // /mxdeliv answers foreign domains like unknown users (no relaying, no tell).
      if (env.door === "mxdeliv") return { kind: "drop", note: "unknown_user" };
      return { kind: "done", verdict: { verdict: "reject", reason: "relay_denied", detail: `${domain} is not local` } };
    }
    // Doors that answer per recipient to someone we trust with the truth (an MTA in front, a
    // logged-in user, a local script, an exchanger partner we pull from, which bounces the
    // refusal to its sender) refuse unknown users; the others drop them unseen.
    const tell = env.door === "lmtp" || env.door === "submission" || env.door === "send" || env.door === "pull";
    if (isReservedLocalPart(address)) {
      return tell
        ? { kind: "done", verdict: { verdict: "reject", reason: "unknown_user", detail: address } }
        : { kind: "drop", note: "reserved" };
    }
    const user = await findUser(deps.db, address);
    if (!user) {
      return tell
        ? { kind: "done", verdict: { verdict: "reject", reason: "unknown_user", detail: address } }
        : { kind: "drop", note: "unknown_user" };
    }
    return { kind: "local", address, quota: user.quota_bytes ?? snap.config["quota.default"], used: user.used_bytes };
  }

  function duplicateResult(env: Envelope, ms: number): AcceptResult {
    return { rcpts: env.rcpts.map(() => ({ verdict: "accept", stored: false, note: "duplicate" })), ms };
  }

  /** Resolves when every accept begun so far is done (stored or refused). */
  async function idle(): Promise<void> {
    await Promise.allSettled([...running]);
  }

  return { accept, idle };
}

export type Acceptor = ReturnType<typeof createAcceptor>;

const selectDeliveryId = prepareQuery((db, p: { id: string }) => db.selectFrom("delivery_ids").select(["pending", "queued"]).where("id", "=", p.id));
const markDeliveryIdPending = prepareQuery((db, p: { id: string; at: number }) =>
  db.insertInto("delivery_ids").values({ id: p.id, seen_at: p.at, pending: 1 }).onConflict((oc) => oc.column("id").doNothing()));
const markDeliveryIdDone = prepareQuery((db, p: { id: string; at: number }) =>
  db.insertInto("delivery_ids").values({ id: p.id, seen_at: p.at, pending: 0 }).onConflict((oc) => oc.column("id").doUpdateSet({ pending: 0 })));

const markDeliveryIdQueued = prepareQuery((db, p: { id: string; at: number; pending: number }) =>
  db.insertInto("delivery_ids").values({ id: p.id, seen_at: p.at, pending: p.pending, queued: 1 }).onConflict((oc) => oc.column("id").doUpdateSet({ queued: 1 })));

/** queued: pending, and the remote recipients are in the queue already. */
type DeliveryIdState = "new" | "pending" | "queued" | "done";

async function deliveryIdState(db: Db, id: string): Promise<DeliveryIdState> {
  const row = await firstRow(selectDeliveryId, db, { id });
  return !row ? "new" : row.pending ? (row.queued ? "queued" : "pending") : "done";
}

/** The same Maildir name for every attempt of one delivery id (and size, as Maildir ,S=). */
function stableMaildirName(deliveryId: string, size: number): string {
  return `${createHash("sha256").update(deliveryId).digest("hex").slice(0, 32)}.madmail,S=${size}`;
}

function senderDomainOf(env: Envelope): string | null {
  const a = env.mailFrom ? normaliseAddress(env.mailFrom) : null;
  if (a) return domainOf(a);
  // Null sender (a bounce): judge by the From: header so a blocked peer cannot slip past
  // policy with an empty envelope sender.
  return headerFromDomain(env.body);
}

/**
 * A logged-in user writes as itself: the From: header holds exactly its address (the one
 * MAIL FROM had to be). Our DKIM signature vouches for that header, so a user of the domain
 * must not put another user's address there.
 */
function fromIsSender(env: Envelope): boolean {
  const from = headerFromAddresses(env.body);
  return from !== null && from.length === 1 && from[0] === normaliseAddress(env.mailFrom);
}

function isPassthrough(snap: Snapshot, address: string, which: "senders" | "recipients" = "senders"): boolean {
  const list = snap.config[`gate.passthrough_${which}`];
  if (!list.length || !address) return false;
  const a = normaliseAddress(address);
  return !!a && (list.includes(a) || list.includes(`@${domainOf(a)}`));
}

function logResult(env: Envelope, verdicts: RcptVerdict[], ms: number): void {
  const summary = summarise(verdicts);
  const sender = env.mailFrom ? domainOf(env.mailFrom.toLowerCase()) : "<>";
  log.withTag(env.door).info(
    `peer=${env.peer} from_domain=${sender} rcpts=${env.rcpts.length} size=${env.body.length} verdict=${summary} ms=${ms.toFixed(1)}`,
  );
}

function summarise(verdicts: RcptVerdict[]): string {
  const counts = new Map<string, number>();
  for (const v of verdicts) {
    const k = v.verdict === "reject" ? `reject:${v.reason}` : v.verdict === "accept" && v.note ? `accept:${v.note}` : v.verdict;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => (counts.size === 1 && n === verdicts.length ? k : `${k}x${n}`)).join(",");
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
