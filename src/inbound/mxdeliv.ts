// POST /mxdeliv: the HTTP federation door (wire format shared with madmail Go/Rust,
// madexchanger and chatmail filtermail). Headers carry the envelope, the body is the raw
// RFC 5322 message; Content-Type is ignored.
import type { H3, H3Event } from "h3";
import { errorText, log } from "../log.ts";
import { bodyBudget } from "./body-budget.ts";
import { normaliseAddress } from "../util/names.ts";
import type { Acceptor } from "./accept.ts";
import { HTTP_ERROR, toHttpReply, type HttpReply } from "./replies.ts";
import type { SnapshotSource } from "./snapshot.ts";
import type { Db } from "../db/open.ts";
import { bearerToken, createFailureLimiter, exchangerByToken } from "../exchanger/auth.ts";

const DELIVERY_ID_RE = /^[\x21-\x7e]{1,200}$/;

/**
 * `idle()`: resolves when no /mxdeliv request is being read, stored or answered. Once
 * `closing` is aborted (the server stops), new requests are answered 503: try again later.
 */
export function mountMxdeliv(app: H3, acceptor: Acceptor, snapshot: SnapshotSource, db: Db, closing: AbortSignal): { idle(): Promise<void> } {
  let inFlight = 0;
  const waiters: (() => void)[] = [];
  // Wrong exchanger tokens per address, as on the pull endpoint: no guessing at full speed.
  const tokenFailures = createFailureLimiter();
  app.post("/mxdeliv", async (event) => {
    if (closing.aborted) return reply({ status: 503, body: "shutting down, try again later" });
    inFlight++;
    try {
      return await handle(event);
    } finally {
      if (--inFlight === 0) for (const w of waiters.splice(0)) w();
    }
  });
  return { idle: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => waiters.push(r))) };

  async function handle(event: H3Event): Promise<Response> {
    const req = event.req;
    const peer = remoteIp(event) ?? "unknown";
    let reserved = 0;
    try {
      const limit = (await snapshot.get()).config["limits.max_message_size"];
      const fromHeader = fromUtf8(req.headers.get("x-mail-from"));
      // Fetch joins repeated X-Mail-To headers with ", ", and a comma list is allowed too.
      const rcpts = (fromUtf8(req.headers.get("x-mail-to")) ?? "").split(",").map((s) => s.trim()).filter(Boolean);
      const mailFrom = (fromHeader ?? "").trim();
      if (!rcpts.length || rcpts.some((r) => !normaliseAddress(r)) || (mailFrom && !normaliseAddress(mailFrom)) || mailFrom.includes(",")) {
        return reply({ status: 400, body: "bad request" });
      }
      // An exchanger partner identifies itself with its token: its mail may be passed on. A
      // partner whose token no longer works must hear it (before it sends the body): silently
      // treating it as an anonymous peer would drop the mail it asks us to pass on.
      const token = bearerToken(req.headers.get("authorization"));
      let partner: Awaited<ReturnType<typeof exchangerByToken>> = null;
      if (token) {
        if (tokenFailures.blocked(peer)) return reply({ status: 429, body: "too many failed attempts, try again later" });
        partner = await exchangerByToken(db, token);
        if (!partner) {
          tokenFailures.fail(peer);
          log.withTag("mxdeliv").warn(`peer=${peer} answered 401: wrong, unknown or disabled exchanger token`);
          return reply({ status: 401, body: "unauthorized" });
        }
        tokenFailures.succeed(peer);
      }
      const declared = Number(req.headers.get("content-length") ?? NaN);
      if (declared > limit) return reply({ status: 413, body: "message too large" });
      // Bodies are held in memory until stored: their total is bounded, so that many large
      // uploads at once cannot take the server's memory (the sender retries a 503 later). A
      // small body counts from the start (read whole: the fast path); a large or chunked one as
      // its bytes arrive, so that a peer announcing 30 MB and sending nothing holds nothing.
      const busy = () => {
        log.withTag("mxdeliv").warn(`peer=${peer} answered 503: ${bodyBudget.held()} bytes of messages already in memory`);
        return reply({ status: 503, body: "busy, try again later" });
      };
      const small = Number.isFinite(declared) && declared <= SMALL_BODY;
      if (small) {
        if (!bodyBudget.take(declared, limit)) return busy();
        reserved = declared;
      }
      const charge = (n: number) => {
        if (!bodyBudget.take(n, limit)) return false;
        reserved += n;
        return true;
      };
      let body: Uint8Array | null | "busy";
      try {
        body = small ? await readWhole(req) : await readCounted(req, limit, charge);
      } catch (err) {
        // The peer went away mid-body (or sent a broken chunked body): nothing was stored.
        log.withTag("mxdeliv").info(`peer=${peer} upload ended early, nothing stored: ${errorText(err)}`);
        return reply({ status: 400, body: "bad request" });
      }
      if (body === "busy") return busy();
      if (!body) return reply({ status: 413, body: "message too large" });
      const deliveryId = req.headers.get("x-madmail-delivery-id")?.trim();
      const result = await acceptor.accept({
        door: "mxdeliv",
        peer,
        mailFrom,
        rcpts,
        body,
        deliveryId: deliveryId && DELIVERY_ID_RE.test(deliveryId) ? deliveryId : undefined,
        trustedPeer: partner?.name,
      });
      return reply(toHttpReply(result.rcpts));
    } catch (err) {
      log.withTag("mxdeliv").error(`peer=${peer} answered 500: ${errorText(err)}`);
      log.withTag("mxdeliv").debug(err);
      return reply(HTTP_ERROR);
    } finally {
      bodyBudget.give(reserved);
    }
  }
}

/**
 * Header values arrive one character per byte: addresses in UTF-8 (RFC 6532, how madmail and
 * chatmail peers send them) are decoded as such; bytes that are no UTF-8 stay as they came.
 */
function fromUtf8(value: string | null): string | null {
  if (value === null || !/[^\x00-\x7f]/.test(value)) return value;
  const bytes = Buffer.from(value, "latin1");
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  return text.includes("\ufffd") ? value : text;
}

function reply(r: HttpReply): Response {
  return new Response(r.body, { status: r.status, headers: { "content-type": "text/plain; charset=utf-8" } });
}

/** Bodies announced at most this big are read whole and counted in the budget up front. */
const SMALL_BODY = 64 * 1024;

/** A small body with a Content-Length (already checked against the limit): one read. */
async function readWhole(req: Request): Promise<Uint8Array> {
  return req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array(0);
}

/**
 * Reads the body chunk by chunk, each counted with `charge` before it is kept: null as soon as
 * it passes the limit, "busy" when the budget refuses a chunk. Never buffers more.
 */
async function readCounted(req: Request, limit: number, charge: (n: number) => boolean): Promise<Uint8Array | null | "busy"> {
  if (!req.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > limit || !charge(value.length)) {
      await reader.cancel().catch(() => {});
      return total > limit ? null : "busy";
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function remoteIp(event: { req: Request & { ip?: string } }): string | undefined {
  return event.req.ip;
}
