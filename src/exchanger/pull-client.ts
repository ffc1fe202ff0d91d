// Client side of exchanger pull (DESIGN.md section 6): fetch the mail a partner holds for us,
// feed it through the accept pipeline (door "pull"), and acknowledge only what reached a final
// verdict. Used by `madmail pull-client` (cron) and by the server's own poller.
//
//   madmail:      GET  <base>/exchanger/pull?wait=S&max=N   Authorization: Bearer TOKEN
//                      -> {"messages":[{"id","mail_from","rcpt_to":[..],"size","queued_at","body_base64"}],"more":bool}
//                 POST <base>/exchanger/ack {"ids":[...],"refused":{ID:[{"address","status","diagnostic"}]}}   -> {"acked":N}
//                      (refused: recipients refused for good, which the partner bounces to its sender)
//   madexchanger: GET  <base>/pull?domain=D                 Authorization: Bearer TOKEN
//                 POST <base>/pull/ack {"ids":[...]}
//
// Crash safety: every message goes in with deliveryId = the partner's id, so a message pulled
// again (we crashed between accepting and acking, or the ack was lost) is stored only once.
// node:http(s) rather than fetch: per-request TLS verification on every runtime.
import { readFileSync, statSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { MadmailError } from "../errors.ts";
import { log } from "../log.ts";
import { domainOf, normaliseAddress, normaliseIp } from "../util/names.ts";
import { smtpReplyForReason } from "../inbound/replies.ts";
import type { FailedRecipient } from "../queue/worker.ts";
import { VERSION } from "../version.ts";
import type { Core } from "../server.ts";

export type PullProtocol = "madmail" | "madexchanger";

/** What the drain needs of a running core: the accept pipeline and the local domains. */
export type PullCore = Pick<Core, "acceptor" | "snapshot">;

export interface DrainOptions {
  /** The partner's base URL, as stored in its exchanger entry (no trailing slash). */
  baseUrl: string;
  /** Our token at the partner (their `madmail exchanger token NAME`). */
  token: string;
  /** @default "madmail" */
  protocol?: PullProtocol;
  /** madexchanger only (required there): the recipient domains to pull, one after another. */
  domains?: string[];
  /** Seconds the partner may hold a pull open while it has nothing for us (0-60). */
  wait: number;
  /** Messages per pull (1-500). */
  max: number;
  /** No new pull round starts after this long; the round under way finishes. */
  maxTimeMs: number;
  /** Stop after this many pull rounds (per domain with madexchanger; `--once` = 1). @default unlimited */
  maxRounds?: number;
  core: PullCore;
  /** Aborts the pull or ack under way; what was accepted stays accepted (and comes back deduplicated). */
  signal?: AbortSignal;
  /** Check the partner's certificate. @default true, except for an IP literal host (delivery.tls_verify auto) */
  verifyTls?: boolean;
  /** Called after each completed round (pull, accept, ack), empty or not. */
  onRound?: (round: RoundReport) => void | Promise<void>;
  /** Messages of one batch in the pipeline at once. @default 32 */
  concurrency?: number;
  /**
   * How long the partner may take to start its answer beyond `wait`, and then go silent while
   * sending it (a big batch on a slow link takes as long as it needs while bytes flow).
   * @default 30000
   */
  slackMs?: number;
}

export interface RoundReport {
  messages: number;
  acked: number;
  deferred: number;
  more: boolean;
}

export interface DrainError {
  kind: "temporary" | "config";
  message: string;
}

/** `pulled` counts messages; delivered, relayed, refused, deferred and duplicates count recipients. */
export interface DrainResult {
  pulled: number;
  delivered: number;
  /** Already stored here (the same delivery id came before: an acknowledgement the partner lost). */
  duplicates: number;
  relayed: number;
  refused: number;
  deferred: number;
  batches: number;
  ms: number;
  /** True when the partner answered that nothing more is waiting (false: time, rounds or error). */
  drained: boolean;
  error?: DrainError;
}

export const WAIT_MAX = 60;
export const MAX_BATCH = 500;
/** What can stand in an Authorization header. */
const TOKEN_RE = /^[\x21-\x7e]+$/;
/** Beyond the partner's wait: time for the batch itself to arrive. */
const SLACK_MS = 30_000;
/** An answer bigger than this is refused (the madmail endpoint stops near 64 MiB of mail). */
const MAX_ANSWER_BYTES = 512 * 1024 * 1024;

/** Checks a partner base URL; a bad one is a configuration error (exit 1), not a usage error. */
export function parseBaseUrl(input: string): string {
  let u: URL | undefined;
  try {
    u = new URL(input.trim());
  } catch {}
  if (!u || (u.protocol !== "http:" && u.protocol !== "https:") || !u.hostname || u.username || u.password || u.search || u.hash) {
    throw new MadmailError("config", `invalid partner URL "${input}": expected http(s)://HOST[:PORT][/PATH], the base its pull endpoint hangs off`);
  }
  return u.toString().replace(/\/+$/, "");
}

/**
 * A token file: its first line, trimmed. Unreadable or empty is a configuration error; a file
 * others can read only earns a warning (a token readable by others is usable by others).
 */
export function readTokenFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
    if (statSync(file).mode & 0o044) process.stderr.write(`madmail: warning: token file ${file} is readable by other users; chmod 600 ${file}\n`);
  } catch (err) {
    throw new MadmailError("config", `cannot read token file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const token = (text.split(/\r?\n/, 1)[0] ?? "").trim();
  if (!token) throw new MadmailError("config", `token file ${file} is empty (expected the token on its first line)`);
  if (!TOKEN_RE.test(token)) throw new MadmailError("config", `token file ${file}: the token contains spaces or control characters`);
  return token;
}

/** delivery.tls_verify applied to a partner URL: auto checks names, not IP literals. */
export function verifyTlsFor(baseUrl: string, mode: "auto" | "always" | "never" = "auto"): boolean {
  if (mode !== "auto") return mode === "always";
  return normaliseIp(new URL(baseUrl).hostname) === null;
}

export async function drainPartner(o: DrainOptions): Promise<DrainResult> {
  const t0 = performance.now();
  const res: DrainResult = { pulled: 0, delivered: 0, duplicates: 0, relayed: 0, refused: 0, deferred: 0, batches: 0, ms: 0, drained: false };
  let ep: Endpoint | undefined;
  try {
    const base = parseBaseUrl(o.baseUrl);
    if (!TOKEN_RE.test(o.token)) throw new MadmailError("config", "the pull token is empty or contains spaces or control characters");
    const protocol = o.protocol ?? "madmail";
    ep = { base, token: o.token, protocol, agent: newAgent(base, o.verifyTls ?? verifyTlsFor(base)), signal: o.signal, slackMs: o.slackMs ?? SLACK_MS };
    const domains: (string | undefined)[] = protocol === "madexchanger" ? (o.domains ?? []) : [undefined];
    if (!domains.length) throw new MadmailError("config", "the madexchanger protocol needs the domain(s) to pull (--domain D)");
    const wait = Math.min(WAIT_MAX, Math.max(0, Math.floor(o.wait)));
    const max = Math.min(MAX_BATCH, Math.max(1, Math.floor(o.max)));
    /** Id -> how sure we are the partner has our ack: 2 = it said so. */
    const acked = new Map<string, number>();
    let drained = 0;
    rounds: for (const domain of domains) {
      for (let n = 0; ; n++) {
        const left = o.maxTimeMs - (performance.now() - t0);
        if (res.batches > 0 && left <= 0) break rounds;
        if (n >= (o.maxRounds ?? Infinity)) break; // per domain: --once pulls each domain once
        // Never hold the partner open beyond our own deadline.
        const answer = await pull(ep, { wait: Math.min(wait, Math.max(0, Math.floor(left / 1000))), max, domain });
        res.batches++;
        if (answer.messages.length && answer.messages.every((m) => (acked.get(m.id) ?? 0) >= 2)) {
          throw new MadmailError("config", `${base}: hands out again messages we acknowledged; is our ack reaching it? (${protocol} protocol)`);
        }
        const round = await acceptBatch(answer.messages, { ...o, protocol, peer: new URL(base).host, res });
        res.deferred += round.deferred;
        // For the loop check above: an ack the partner took counts at once; one it did not
        // take (it restarted and offers the ids again) counts only the second time, so a
        // restart costs one more round (the ids go in again as duplicates), not an exit 1.
        if (round.final.length) {
          const taken = await ack(ep, round.final, round.refused);
          for (const id of round.final) acked.set(id, taken ? 2 : (acked.get(id) ?? 0) + 1);
        }
        await o.onRound?.({ messages: answer.messages.length, acked: round.final.length, deferred: round.deferred, more: answer.more });
        if (round.deferred) {
          throw new MadmailError("temporary", `${round.deferred} recipient(s) deferred (${round.why}); left with the partner, to be pulled again`);
        }
        // An empty answer ends the domain even if it says `more` (those are leased to someone
        // else): pulling again at once would only spin.
        if (!answer.messages.length) {
          drained++;
          break;
        }
      }
    }
    res.drained = drained === domains.length;
  } catch (err) {
    res.error = toDrainError(err, o.signal);
  } finally {
    ep?.agent.destroy();
    res.ms = performance.now() - t0;
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// internal: accepting a batch

interface PulledMessage {
  /** The partner's id: acknowledged as is. */
  id: string;
  mailFrom: string;
  rcpts: string[];
  body: Uint8Array;
  /** Why this item cannot be used (it is left unacknowledged). */
  problem?: string;
}

/** A recipient refused for good, as the partner needs it for its bounce (the ack's `refused`). */
export type Refusal = Omit<FailedRecipient, "remoteMta">;

async function acceptBatch(
  items: PulledMessage[],
  o: DrainOptions & { protocol: PullProtocol; peer: string; res: DrainResult },
): Promise<{ final: string[]; refused: Map<string, Refusal[]>; deferred: number; why: string }> {
  const { localDomains } = await o.core.snapshot.get();
  const final: string[] = [];
  const refused = new Map<string, Refusal[]>();
  let deferred = 0;
  let why = "";
  const one = async (m: PulledMessage): Promise<void> => {
    o.res.pulled++;
    if (m.problem) {
      log.withTag("pull").error(`message ${m.id} from ${o.peer} is unusable (${m.problem}); not acknowledged`);
      deferred += Math.max(1, m.rcpts.length);
      why ||= m.problem;
      return;
    }
    // madexchanger ids have no documented form (a counter?): scope them to the partner so that
    // two partners' "17" are not taken for one message. madmail ids are queue ids, unique, and
    // the same id the partner's push transport sends as X-Madmail-Delivery-Id.
    const deliveryId = o.protocol === "madmail" ? m.id : `madexchanger:${o.peer}:${m.id}`;
    let verdicts;
    try {
      verdicts = (await o.core.acceptor.accept({ door: "pull", peer: o.peer, mailFrom: m.mailFrom, rcpts: m.rcpts, body: m.body, deliveryId })).rcpts;
    } catch (err) {
      log.withTag("pull").error(`message ${m.id} from ${o.peer}: ${(err as Error).message}`);
      deferred += m.rcpts.length;
      why ||= "accept failed";
      return;
    }
    let temp = 0;
    const no: Refusal[] = [];
    for (const [i, v] of verdicts.entries()) {
      if (v.verdict === "tempfail") {
        temp++;
        why ||= v.detail;
      } else if (v.verdict === "reject" && v.reason === "quota") {
        // Left with the partner to offer again, as a push of it would be answered 507 and
        // retried (the user may make room); a final refusal would lose it. The copies stored
        // now are found by the delivery id when it comes again.
        temp++;
        why ||= "quota";
      } else if (v.verdict === "accept") {
        const a = normaliseAddress(m.rcpts[i]!);
        if (v.note === "duplicate") o.res.duplicates++;
        else if (a && localDomains.has(domainOf(a))) o.res.delivered++;
        else o.res.relayed++;
      } else if (v.verdict === "reject") {
        o.res.refused++;
        const reply = smtpReplyForReason(v.reason);
        no.push({ address: m.rcpts[i]!, status: reply.text.split(" ", 1)[0]!, diagnostic: `smtp; ${reply.code} ${reply.text}` });
      } else o.res.refused++; // dismissed: kept nothing, by policy, and says nothing
    }
    deferred += temp;
    if (temp) return;
    final.push(m.id);
    if (no.length) {
      refused.set(m.id, no);
      const list = no.map((r) => `${r.address} (${r.status})`).join(", ");
      log.withTag("pull").warn(`message ${m.id} from ${o.peer} (sender ${m.mailFrom || "<>"}): refused ${list}; acknowledged${o.protocol === "madmail" ? ", the partner bounces it" : ", not kept"}`);
    }
  };
  // A small pool: the pipeline commits concurrent messages together (group commit).
  const queue = [...items];
  const workers = Array.from({ length: Math.min(o.concurrency ?? 32, queue.length) }, async () => {
    for (let m = queue.shift(); m; m = queue.shift()) await one(m);
  });
  await Promise.all(workers);
  // Acknowledged in the partner's order (easier to follow in its logs), each id once.
  const done = new Set(final);
  return { final: [...new Set(items.map((m) => m.id).filter((id) => done.has(id)))], refused, deferred, why };
}

// ---------------------------------------------------------------------------------------------
// internal: the wire

interface Endpoint {
  base: string;
  token: string;
  protocol: PullProtocol;
  agent: http.Agent;
  signal?: AbortSignal;
  slackMs: number;
}

async function pull(ep: Endpoint, q: { wait: number; max: number; domain?: string }): Promise<{ messages: PulledMessage[]; more: boolean }> {
  const path = ep.protocol === "madmail" ? `/exchanger/pull?wait=${q.wait}&max=${q.max}` : `/pull?domain=${encodeURIComponent(q.domain!)}`;
  const json = await call(ep, "GET", path, undefined, q.wait * 1000 + ep.slackMs);
  return parseAnswer(json, ep);
}

/** Acknowledges `ids`; returns whether the partner took them all (madmail says how many it took). */
async function ack(ep: Endpoint, ids: string[], refused: Map<string, Refusal[]>): Promise<boolean> {
  const path = ep.protocol === "madmail" ? "/exchanger/ack" : "/pull/ack";
  // The madmail endpoint takes up to 10,000 ids per call; a batch is at most 500. Refusals go
  // to madmail partners only: madexchanger's ack has no place for them.
  const body = ep.protocol === "madmail" && refused.size ? { ids, refused: Object.fromEntries(refused) } : { ids };
  const answer = await call(ep, "POST", path, body, ep.slackMs);
  const n = isObject(answer) && typeof answer.acked === "number" ? answer.acked : ids.length;
  return n >= ids.length;
}

/**
 * The answer to a pull. madmail's shape is exact. madexchanger's JSON is not documented anywhere
 * we could read, so its answers are read leniently: an object with an array under `messages`
 * (or a bare array); per item the id under `id` (string or number), the sender under
 * `mail_from` | `from` | `sender`, recipients under `rcpt_to` | `to` | `recipients` (array or
 * comma string), the raw message base64 under `body_base64` | `data` | `body`. A missing `more`
 * means false. An item with an id but an unusable envelope is left unacknowledged (it comes
 * back after its lease and is reported again) rather than dropped.
 */
function parseAnswer(json: unknown, ep: Endpoint): { messages: PulledMessage[]; more: boolean } {
  const lenient = ep.protocol === "madexchanger";
  const list = lenient && Array.isArray(json) ? json : isObject(json) ? json.messages : undefined;
  if (!Array.isArray(list) || (!lenient && isObject(json) && json.more !== undefined && typeof json.more !== "boolean")) {
    throw badAnswer(ep, lenient ? "no messages array" : 'expected {"messages":[...],"more":true|false}');
  }
  const more = isObject(json) && json.more === true;
  const messages = list.map((item, i): PulledMessage => {
    if (!isObject(item)) throw badAnswer(ep, `message ${i} is not an object`);
    const rawId = item.id;
    const id = typeof rawId === "string" ? rawId : lenient && typeof rawId === "number" ? String(rawId) : "";
    if (!/^[\x21-\x7e]{1,200}$/.test(id)) throw badAnswer(ep, `message ${i} has no usable id`);
    const from = pick(item, lenient ? ["mail_from", "from", "sender"] : ["mail_from"]);
    const to = pick(item, lenient ? ["rcpt_to", "to", "recipients"] : ["rcpt_to"]);
    const data = pick(item, lenient ? ["body_base64", "data", "body"] : ["body_base64"]);
    const rcpts = Array.isArray(to) ? to : lenient && typeof to === "string" ? to.split(",") : null;
    const m: PulledMessage = { id, mailFrom: typeof from === "string" ? from.trim() : "", rcpts: [], body: new Uint8Array() };
    if (typeof from !== "string") m.problem = "no sender";
    else if (!rcpts || !rcpts.length || !rcpts.every((r) => typeof r === "string")) m.problem = "no recipients";
    else if (typeof data !== "string" || !data.length || !/^[A-Za-z0-9+/_=\s-]+$/.test(data)) m.problem = "no base64 body";
    if (rcpts && rcpts.every((r) => typeof r === "string")) m.rcpts = (rcpts as string[]).map((r) => r.trim()).filter(Boolean);
    if (!m.problem) m.body = new Uint8Array(Buffer.from(data as string, "base64"));
    if (!m.problem && !m.body.length) m.problem = "empty body";
    return m;
  });
  return { messages, more };
}

/** One request; the JSON answer of a 2xx, else a MadmailError saying whether to retry. */
function call(ep: Endpoint, method: "GET" | "POST", path: string, payload: unknown, timeoutMs: number): Promise<unknown> {
  const url = new URL(ep.base + path);
  const what = `${method} ${url.origin}${url.pathname}`;
  const body = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload));
  return new Promise((resolve, reject) => {
    if (ep.signal?.aborted) return reject(aborted());
    const lib = url.protocol === "https:" ? https : http;
    const req = lib.request(url, {
      method,
      agent: ep.agent,
      headers: {
        Authorization: `Bearer ${ep.token}`,
        Accept: "application/json",
        "User-Agent": `madmail/${VERSION} pull-client`,
        ...(body ? { "Content-Type": "application/json", "Content-Length": String(body.length) } : {}),
      },
    }, (res) => {
      // The answer has begun: from here on only silence ends it, so that a big batch on a slow
      // link arrives whole (a total deadline made such a partner's backlog undrainable).
      const silence = () => {
        clearTimeout(timer);
        timer = setTimeout(() => req.destroy(new MadmailError("temporary", `${what}: the answer stopped for ${Math.round(ep.slackMs / 1000)} s`)), ep.slackMs);
      };
      silence();
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        silence();
        size += c.length;
        if (size > MAX_ANSWER_BYTES) req.destroy(new MadmailError("config", `${what}: answer larger than ${MAX_ANSWER_BYTES >> 20} MiB`));
        else chunks.push(c);
      });
      res.on("error", (err) => fail(err instanceof MadmailError ? err : new MadmailError("temporary", `${what}: ${err.message}`)));
      res.on("end", () => {
        const status = res.statusCode ?? 0;
        const text = Buffer.concat(chunks).toString("utf8");
        const short = text.slice(0, 200).replace(/\s+/g, " ").trim();
        if (status >= 200 && status < 300) {
          try {
            return done(JSON.parse(text));
          } catch {
            return fail(new MadmailError("config", `${what}: answer is not JSON (${short || "empty"}); is this the ${ep.protocol} pull endpoint?`));
          }
        }
        fail(statusError(what, status, short, res.headers.location));
      });
    });
    // Until the answer begins, a total deadline, not an idle one: a long poll is idle by design.
    let timer = setTimeout(() => req.destroy(new MadmailError("temporary", `${what}: no answer within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
    const onAbort = () => req.destroy(aborted());
    ep.signal?.addEventListener("abort", onAbort, { once: true });
    req.on("error", (err: NodeJS.ErrnoException) => {
      if (err instanceof MadmailError) return fail(err);
      if (ep.signal?.aborted) return fail(aborted());
      const detail = err.code && !err.message.includes(err.code) ? `${err.code}: ${err.message}` : err.message;
      fail(new MadmailError("temporary", `${what}: ${detail}`));
    });
    function done(v: unknown) {
      cleanup();
      resolve(v);
    }
    function fail(err: unknown) {
      cleanup();
      reject(err);
    }
    function cleanup() {
      clearTimeout(timer);
      ep.signal?.removeEventListener("abort", onAbort);
    }
    req.end(body);
  });
}

function statusError(what: string, status: number, text: string, location?: string): MadmailError {
  if (status === 401 || status === 403) {
    return new MadmailError("config", `${what}: ${status} ${text || "unauthorized"}: the partner does not accept our token (wrong, unknown or disabled there)`);
  }
  if (status >= 300 && status < 400) {
    return new MadmailError("config", `${what}: ${status} redirect${location ? ` to ${location}` : ""}; use the final base URL`);
  }
  if (status === 404) return new MadmailError("config", `${what}: 404: no pull endpoint there; check the URL and --protocol`);
  // 408, 425, 429 (rate limited) and 5xx: the partner asks us to come back later.
  if (status === 408 || status === 425 || status === 429 || status >= 500) {
    return new MadmailError("temporary", `${what}: ${status}${text ? ` ${text}` : ""}${status === 429 ? " (rate limited)" : ""}`);
  }
  return new MadmailError("config", `${what}: ${status}${text ? ` ${text}` : ""}`);
}

function newAgent(base: string, verifyTls: boolean): http.Agent {
  // One agent per drain, destroyed at its end: keep-alive between rounds, no socket left behind.
  return base.startsWith("https:")
    ? new https.Agent({ keepAlive: true, maxSockets: 2, rejectUnauthorized: verifyTls })
    : new http.Agent({ keepAlive: true, maxSockets: 2 });
}

function toDrainError(err: unknown, signal?: AbortSignal): DrainError {
  if (err instanceof MadmailError && (err.code === "config" || err.code === "temporary")) return { kind: err.code, message: err.message };
  if (signal?.aborted) return { kind: "temporary", message: "interrupted" };
  log.withTag("pull").error(err);
  return { kind: "temporary", message: (err as Error)?.message ?? String(err) };
}

const aborted = () => new MadmailError("temporary", "interrupted");
const badAnswer = (ep: Endpoint, why: string) => new MadmailError("config", `${ep.base}: unexpected answer from the ${ep.protocol} pull endpoint: ${why}`);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const pick = (o: Record<string, unknown>, keys: string[]): unknown => o[keys.find((k) => o[k] !== undefined) ?? ""];
