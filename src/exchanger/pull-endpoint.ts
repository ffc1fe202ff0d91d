// The pull endpoint: an exchanger partner fetches the mail held for it (route exchanger:NAME)
// by long polling, and acknowledges what it stored. Handed-out messages are leased
// (exchanger.pull_lease) and offered again if no ack comes in time; ack is idempotent.
//
//   GET  /exchanger/pull?wait=SECONDS&max=N   Authorization: Bearer TOKEN
//        -> {"messages":[{"id","mail_from","rcpt_to":[..],"size","queued_at","body_base64"}],"more":bool}
//   POST /exchanger/ack {"ids":[...],"refused":{ID:[{"address","status","diagnostic"}]}}
//                                              Authorization: Bearer TOKEN  -> {"acked":N}
//        refused (optional): recipients the partner refused for good; their sender, if a user
//        here, gets a bounce. Only for ids this ack settles, and only their own recipients.
import type { EventEmitter } from "node:events";
import type { H3, H3Event } from "h3";
import { sql } from "kysely";
import { withWriteTransaction, type Db } from "../db/open.ts";
import type { SnapshotSource } from "../inbound/snapshot.ts";
import { errorText, log } from "../log.ts";
import { loadMessage } from "../queue/queue.repository.ts";
import { signingDomain } from "../delivery/dkim.ts";
import type { Bounce, FailedRecipient } from "../queue/worker.ts";
import { oneLine } from "../util/one-line.ts";
import { bearerToken, createFailureLimiter, exchangerByToken } from "./auth.ts";

const MAX_WAIT_S = 60;
const MAX_BATCH = 500;
const MAX_BATCH_BYTES = 64 * 1024 * 1024;

export interface PullDeps {
  db: Db;
  snapshot: SnapshotSource;
  /** Emits "held" (exchanger name) when the worker puts mail aside for a pull. */
  events: EventEmitter;
  /** Aborted on shutdown: waiting pulls answer at once. */
  signal: AbortSignal;
  /** DKIM, as for pushed mail: the partner passes it on to relays that check signatures. */
  sign(body: Uint8Array, senderDomain: string): Promise<Uint8Array>;
  /** The DSN for recipients the partner refused for good. */
  bounce?: Bounce;
}

/** Recipients the partner refused for good, by delivery id: the bounce's recipients. */
type Refused = Map<string, FailedRecipient[]>;

/** The ack's optional `refused`, or a reason it is malformed. */
function parseRefused(v: unknown): Refused | string {
  const out: Refused = new Map();
  if (v === undefined) return out;
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "refused must be an object of id -> recipients";
  for (const [id, list] of Object.entries(v)) {
    if (id.length > 64 || !Array.isArray(list) || list.length > 1000) return `refused.${id.slice(0, 64)}: expected a list of recipients`;
    const rows: FailedRecipient[] = [];
    for (const r of list) {
      const { address, status, diagnostic } = (r ?? {}) as Record<string, unknown>;
      if (typeof address !== "string" || address.length > 320 || typeof status !== "string" || !/^5\.\d{1,3}\.\d{1,3}$/.test(status) ||
        (diagnostic !== undefined && typeof diagnostic !== "string")) {
        return `refused.${id}: each recipient needs "address" and a permanent "status" (5.x.y)`;
      }
      rows.push({ address, status, diagnostic: oneLine(String(diagnostic ?? "x-madmail; refused by the exchanger partner"), 500) });
    }
    out.set(id, rows);
  }
  return out;
}

export function mountExchangerPull(app: H3, deps: PullDeps): void {
  const limiter = createFailureLimiter();

  async function authenticate(event: H3Event): Promise<{ name: string } | Response> {
    const peer = (event.req as Request & { ip?: string }).ip ?? "unknown";
    if (limiter.blocked(peer)) return json({ error: "too many failed attempts, try again later" }, 429);
    const row = await exchangerByToken(deps.db, bearerToken(event.req.headers.get("authorization")));
    if (!row) {
      limiter.fail(peer);
      log.withTag("exchanger").warn(`refused pull from ${peer}: wrong, unknown or disabled token`);
      // RFC 6750 §3: a 401 names the scheme it wants.
      return json({ error: "unauthorized" }, 401, { "www-authenticate": 'Bearer realm="madmail exchanger"' });
    }
    limiter.succeed(peer);
    return { name: row.name };
  }

  app.get("/exchanger/pull", async (event) => {
    const who = await authenticate(event);
    if (who instanceof Response) return who;
    const url = new URL(event.req.url);
    const wait = clampInt(url.searchParams.get("wait"), 0, MAX_WAIT_S, 0);
    const max = clampInt(url.searchParams.get("max"), 1, MAX_BATCH, 50);
    const route = `exchanger:${who.name}`;
    const deadline = Date.now() + wait * 1000;
    // Stamped when the pull arrives too: a partner waiting in a long poll is active, not STALE.
    if (wait > 0) await deps.db.updateTable("exchangers").set({ last_pull_at: Date.now() }).where("name", "=", who.name).execute();
    // A client that went away while we waited must not get mail leased to it.
    const gone = event.req.signal;
    let batch = await leaseHeld(deps, route, max);
    const token = bearerToken(event.req.headers.get("authorization"));
    while (!batch.ids.length && Date.now() < deadline && !deps.signal.aborted && !gone.aborted) {
      await waitForHeld(deps, who.name, deadline - Date.now(), gone);
      if (gone.aborted) return new Response(null, { status: 499 });
      // The token may have been replaced, or the exchanger disabled or removed, while this
      // pull waited: mail must not be leased to a credential that no longer works.
      if ((await exchangerByToken(deps.db, token))?.name !== who.name) return json({ messages: [], more: false });
      batch = await leaseHeld(deps, route, max);
    }
    await deps.db.updateTable("exchangers").set({ last_pull_at: Date.now() }).where("name", "=", who.name).execute();
    const messages: { id: string; mail_from: string; rcpt_to: string[]; size: number; queued_at: string; body_base64: string }[] = [];
    let bytes = 0;
    for (const row of batch.rows) {
      const msg = await loadMessage(deps.db, row.message_id);
      if (!msg) continue;
      const signAs = signingDomain(msg);
      const body = signAs ? await deps.sign(msg.body, signAs) : msg.body;
      bytes += body.length;
      messages.push({
        id: row.id,
        mail_from: msg.mail_from,
        rcpt_to: JSON.parse(row.rcpts) as string[],
        size: body.length,
        queued_at: new Date(msg.received_at).toISOString(),
        body_base64: Buffer.from(body).toString("base64"),
      });
      if (bytes > MAX_BATCH_BYTES) break;
    }
    // Leased but not sent (the size cap): offer them again at once, not after the lease.
    const unsent = batch.ids.filter((id) => !messages.some((m) => m.id === id));
    if (unsent.length) {
      await deps.db.updateTable("deliveries").set({ state: "deferred", lease_until: null })
        .where("id", "in", unsent).where("state", "=", "delivering").where("route", "=", route).execute();
    }
    if (messages.length) log.withTag("exchanger").info(`exchanger=${who.name} pulled=${messages.length} bytes=${bytes}`);
    return json({ messages, more: batch.more || messages.length < batch.rows.length });
  });

  app.post("/exchanger/ack", async (event) => {
    const who = await authenticate(event);
    if (who instanceof Response) return who;
    let body: { ids?: unknown; refused?: unknown };
    try {
      body = (await event.req.json()) as typeof body;
    } catch {
      return json({ error: 'expected JSON {"ids":[...]}' }, 400);
    }
    const ids = body?.ids;
    if (!Array.isArray(ids) || ids.length > 10_000 || !ids.every((i) => typeof i === "string" && i.length <= 64)) {
      return json({ error: 'expected JSON {"ids":[...]} with at most 10000 string ids' }, 400);
    }
    const refused = parseRefused(body.refused);
    if (typeof refused === "string") return json({ error: refused }, 400);
    const route = `exchanger:${who.name}`;
    const acked = await ackPulled(deps.db, route, ids as string[], refused);
    if (acked.length) log.withTag("exchanger").info(`exchanger=${who.name} acked=${acked.length}`);
    for (const id of acked) {
      const no = refused.get(id);
      if (no?.length) await bounceRefused(deps, who.name, id, no).catch((err) => log.withTag("exchanger").error(`bounce for ${id}: ${errorText(err)}`));
    }
    return json({ acked: acked.length });
  });
}

/** Leases up to `max` held rows (and rows whose pull lease ran out) for this exchanger. */
async function leaseHeld(deps: PullDeps, route: string, max: number) {
  const leaseMs = (await deps.snapshot.get()).config["exchanger.pull_lease"] * 1000;
  const now = Date.now();
  return withWriteTransaction(deps.db, async (trx) => {
    // Two lookups on the (route, state) index: delivered history is never read.
    const cols = ["id", "message_id", "rcpts", "created_at"] as const;
    const held = await trx.selectFrom("deliveries").select(cols).where("route", "=", route).where("state", "=", "deferred")
      .orderBy("created_at").limit(max + 1).execute();
    const expired = await trx.selectFrom("deliveries").select(cols).where("route", "=", route).where("state", "=", "delivering")
      .where("lease_until", "<", now).orderBy("created_at").limit(max + 1).execute();
    const rows = [...expired, ...held].sort((a, b) => a.created_at - b.created_at);
    const take = rows.slice(0, max);
    for (const r of take) {
      await trx.updateTable("deliveries").set({ state: "delivering", lease_until: now + leaseMs, updated_at: now }).where("id", "=", r.id).execute();
    }
    return { rows: take, ids: take.map((r) => r.id), more: rows.length > max };
  }, { durable: false });
}

/** Marks the leased rows among `ids` delivered; returns the ids this call settled. */
async function ackPulled(db: Db, route: string, ids: string[], refused: Refused): Promise<string[]> {
  if (!ids.length) return [];
  const now = Date.now();
  return withWriteTransaction(db, async (trx) => {
    const r = await trx.updateTable("deliveries")
      .set({ state: "delivered", lease_until: null, last_error: null, updated_at: now, tries: sql`tries + 1` })
      .where("id", "in", ids).where("route", "=", route).where("state", "=", "delivering")
      .executeTakeFirst();
    if (!Number(r.numUpdatedRows)) return [];
    const acked = await trx.selectFrom("deliveries").select(["id", "rcpts"]).where("id", "in", ids).where("state", "=", "delivered").where("updated_at", "=", now).execute();
    // Refused for every recipient: dead, as when every recipient of a push got a 5xx.
    const dead: { id: string; error: string }[] = [];
    await trx.insertInto("delivery_attempts").values(acked.flatMap((a) => {
      const mine = new Set(JSON.parse(a.rcpts) as string[]);
      const no = (refused.get(a.id) ?? []).filter((x) => mine.has(x.address));
      refused.set(a.id, no);
      if (no.length && no.length >= mine.size) dead.push({ id: a.id, error: `refused by the exchanger partner: ${no[0]!.diagnostic}` });
      return [
        { delivery_id: a.id, at: now, transport: "exchanger", endpoint: route, outcome: "delivered" as const, detail: no.length ? `pulled and acknowledged; ${no.length} recipient(s) refused` : "pulled and acknowledged", ms: null },
        ...no.map((x) => ({ delivery_id: a.id, at: now, transport: "rcpt", endpoint: x.address, outcome: "permanent" as const, detail: x.diagnostic, ms: null })),
      ];
    })).execute();
    for (const d of dead) await trx.updateTable("deliveries").set({ state: "dead", last_error: d.error }).where("id", "=", d.id).execute();
    return acked.map((a) => a.id);
  }, { durable: false });
}

/** A DSN to the local sender for the recipients the partner refused (none for a null sender). */
async function bounceRefused(deps: PullDeps, exchanger: string, id: string, no: FailedRecipient[]): Promise<void> {
  log.withTag("exchanger").warn(`exchanger=${exchanger} refused ${no.map((x) => `${x.address} (${x.status})`).join(", ")} of ${id}`);
  if (!deps.bounce) return;
  const delivery = await deps.db.selectFrom("deliveries").selectAll().where("id", "=", id).executeTakeFirst();
  const msg = delivery && (await loadMessage(deps.db, delivery.message_id));
  if (!delivery || !msg || !msg.mail_from) return;
  await deps.bounce.send({ delivery, lease: 0 }, msg.mail_from, msg.body, no);
}

function waitForHeld(deps: PullDeps, name: string, ms: number, client: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      deps.events.off("held", onHeld);
      deps.signal.removeEventListener("abort", done);
      client.removeEventListener("abort", done);
      resolve();
    };
    const onHeld = (n: string) => n === name && done();
    const timer = setTimeout(done, Math.max(0, ms));
    deps.events.on("held", onHeld);
    deps.signal.addEventListener("abort", done, { once: true });
    client.addEventListener("abort", done, { once: true });
  });
}

function clampInt(v: string | null, min: number, max: number, dflt: number): number {
  const n = v === null || !/^\d+$/.test(v) ? dflt : Number(v);
  return Math.min(max, Math.max(min, n));
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}
