// POST <url> in the /mxdeliv wire format: X-Mail-From, one X-Mail-To per recipient,
// X-Madmail-Delivery-Id, raw body. 2xx delivered; 4xx permanent for this transport (but 401,
// 408, 429: temporary); 5xx, timeouts and connection errors temporary. node:http(s) rather than fetch: it takes
// per-request TLS verification and keeps connections alive per peer on every runtime.
import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { certHint, type OutboundMessage, type RecipientRefusal, type TransportResult } from "./types.ts";

const agents = {
  "http:": new http.Agent({ keepAlive: true, maxSockets: 100, timeout: 60_000 }),
  verified: new https.Agent({ keepAlive: true, maxSockets: 100, timeout: 60_000, rejectUnauthorized: true }),
  unverified: new https.Agent({ keepAlive: true, maxSockets: 100, timeout: 60_000, rejectUnauthorized: false }),
};

export interface PostOptions {
  url: string;
  /** Our token at an exchanger partner. */
  bearer?: string;
  verifyTls: boolean;
  timeoutMs: number;
  signal?: AbortSignal;
}

/**
 * Recipients per request. Each is an `X-Mail-To` header, and HTTP servers cap the header block
 * (a madmail peer, on Bun, answers 431 beyond about 190 header fields or 16 KiB): a big group on
 * one peer goes out in several requests.
 */
export const MAX_RCPTS_PER_POST = 100;

/** Time for the TCP connection alone. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * POSTs the message, in requests of at most MAX_RCPTS_PER_POST recipients, each with a
 * delivery id of its own made from the entry's and the part's recipients (the same part gets
 * the same id on every retry, so the peer stores it once). Once a part was accepted, the
 * others are settled here: one refused for good bounces its recipients; one that failed for
 * now, and those after it, stay queued for the next attempt (deferred), which goes to this
 * peer again. Another transport now would give the accepted part's recipients a second copy.
 */
export async function postMxdeliv(msg: OutboundMessage, opts: PostOptions): Promise<TransportResult> {
  if (msg.rcpts.length <= MAX_RCPTS_PER_POST) return postOnce(msg, opts);
  const refused: RecipientRefusal[] = [];
  const deferred: RecipientRefusal[] = [];
  let accepted = "";
  for (let i = 0; i < msg.rcpts.length; i += MAX_RCPTS_PER_POST) {
    const rcpts = msg.rcpts.slice(i, i + MAX_RCPTS_PER_POST);
    const part = { ...msg, rcpts, deliveryId: `${msg.deliveryId}.${partId(rcpts)}` };
    const r = await postOnce(part, opts);
    if (r.outcome === "delivered") accepted ||= r.detail;
    else if (!accepted) return r;
    else if (r.outcome === "permanent") refused.push(...rcpts.map((address) => ({ address, code: 550, text: `HTTP ${r.detail}` })));
    else {
      deferred.push(...msg.rcpts.slice(i).map((address) => ({ address, code: 451, text: `HTTP ${r.detail}` })));
      break;
    }
  }
  const parts = Math.ceil(msg.rcpts.length / MAX_RCPTS_PER_POST);
  return { outcome: "delivered", detail: `${accepted} (${parts} requests)`, refused, deferred };
}

/** Names a part by its recipients: a retry that holds only some of them makes new parts, new names. */
function partId(rcpts: string[]): string {
  return createHash("sha256").update(rcpts.join("\n")).digest("hex").slice(0, 12);
}

function postOnce(msg: OutboundMessage, opts: PostOptions): Promise<TransportResult> {
  const url = new URL(opts.url);
  const isHttps = url.protocol === "https:";
  const lib = isHttps ? https : http;
  return new Promise((resolve) => {
    let settled = false;
    let deadline: ReturnType<typeof setTimeout> | undefined;
    const done = (r: TransportResult) => {
      if (!settled) {
        settled = true;
        clearTimeout(deadline);
        resolve(r);
      }
    };
    let req: http.ClientRequest;
    try {
      req = lib.request(url, {
        method: "POST",
        agent: isHttps ? (opts.verifyTls ? agents.verified : agents.unverified) : agents["http:"],
        headers: {
          "X-Mail-From": utf8Header(msg.mailFrom),
          "X-Mail-To": msg.rcpts.map(utf8Header),
          "X-Madmail-Delivery-Id": msg.deliveryId,
          "Content-Type": "application/octet-stream",
          "Content-Length": String(msg.body.length),
          "User-Agent": "madmail",
          ...(opts.bearer ? { Authorization: `Bearer ${opts.bearer}` } : {}),
        },
        signal: opts.signal,
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          if (size < 4096) chunks.push(c);
          size += c.length;
        });
        res.on("end", () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString("utf8").slice(0, 200).replace(/\s+/g, " ").trim();
          const detail = `${status} ${text}`.trim();
          if (status >= 200 && status < 300) done({ outcome: "delivered", detail, refused: [] });
          // 401 (our token at an exchanger is wrong: the admin fixes it), 408 and 429 pass.
          else if (status === 401 || status === 408 || status === 429) done({ outcome: "temporary", detail });
          else if (status >= 400 && status < 500) done({ outcome: "permanent", detail });
          else done({ outcome: "temporary", detail });
        });
        res.on("error", (err) => done({ outcome: "temporary", detail: `HTTP ${res.statusCode}, then the connection broke during the answer: ${err.message}` }));
      });
    } catch (err) {
      // Refused before anything went out (a header node:http will not send): this transport
      // cannot carry the message, the next one (SMTP) may.
      return done({ outcome: "permanent", detail: `cannot make the request: ${(err as Error).message}` });
    }
    // The whole request, not only a silent socket: a peer trickling its answer is cut off too.
    deadline = setTimeout(() => req.destroy(new Error(`timed out after ${opts.timeoutMs / 1000} s (delivery.timeout)`)), opts.timeoutMs);
    // A port that drops connections (a firewall) costs at most CONNECT_TIMEOUT_MS, not the whole
    // delivery.timeout, before the next candidate (plain HTTP, SMTP) is tried.
    req.on("socket", (socket) => {
      if (!socket.connecting) return;
      const ms = Math.min(CONNECT_TIMEOUT_MS, opts.timeoutMs);
      const t = setTimeout(() => req.destroy(Object.assign(new Error(`connect timed out after ${ms / 1000} s`), { code: "ETIMEDOUT" })), ms);
      socket.once("connect", () => clearTimeout(t));
      socket.once("close", () => clearTimeout(t));
    });
    req.on("error", (err: NodeJS.ErrnoException) => {
      const hint = isHttps ? certHint(err, url.hostname) : "";
      done({ outcome: "temporary", detail: (err.code ? `${err.code}: ${err.message}` : err.message) + hint });
    });
    req.end(msg.body);
  });
}

/**
 * An address as header bytes: UTF-8 (RFC 6532), as madmail Go and chatmail send it. node:http
 * writes a header string one byte per character, so the UTF-8 bytes go in as such characters.
 */
function utf8Header(value: string): string {
  return /[^\x00-\x7f]/.test(value) ? Buffer.from(value, "utf8").toString("latin1") : value;
}
