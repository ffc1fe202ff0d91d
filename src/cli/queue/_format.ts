// What the queue commands share: the ID argument and its resolution (git-like prefixes), and the
// way entries look in tables and JSON.
import type { Db } from "../../db/open.ts";
import type { DeliveryRow } from "../../db/schema.ts";
import { findByIdPrefix, isLeaseLapsed, type QueueListRow } from "../../queue/queue-admin.repository.ts";
import { conflict, notFound, usageError } from "../../errors.ts";
import { isoTime } from "../../util/time.ts";

export const idArg = {
  id: { type: "positional", required: true, valueHint: "ID", description: "Queue entry ID from `madmail queue list`; a unique prefix (4+ characters) is enough" },
} as const;

/** Like git's abbreviated hashes: shorter prefixes match too much to be typed safely. */
const MIN_PREFIX = 4;
const SHOWN_CANDIDATES = 10;
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function checkId(input: string): string {
  if (!ID_RE.test(input)) throw usageError(`invalid queue ID "${input}": expected the letters and digits shown by \`madmail queue list\``);
  return input;
}

/** The entry with this ID, or the one entry whose ID starts with it. */
export async function resolveEntry(db: Db, input: string): Promise<DeliveryRow> {
  const rows = await findByIdPrefix(db, input, SHOWN_CANDIDATES + 1);
  const exact = rows.find((r) => r.id === input);
  if (exact) return exact;
  if (!rows.length) throw notFound(`no queue entry "${input}"`);
  if (input.length < MIN_PREFIX) throw usageError(`queue ID prefix "${input}" is too short: give at least ${MIN_PREFIX} characters`);
  if (rows.length === 1) return rows[0]!;
  const shown = rows.slice(0, SHOWN_CANDIDATES).map((r) => `  ${r.id}  ${r.state}  ${r.rcpt_domain}`);
  if (rows.length > SHOWN_CANDIDATES) shown.push("  ...");
  throw usageError(`queue ID prefix "${input}" is ambiguous; it matches:\n${shown.join("\n")}\ngive more characters`);
}

/** How an entry's state reads in a refusal: `queue entry X is <this>`. */
export function describeState(row: DeliveryRow, now: number): string {
  switch (row.state) {
    case "queued":
      return `queued, due ${nextAttempt(row, now)}`;
    case "deferred":
      return `deferred, next attempt ${nextAttempt(row, now)}`;
    case "held":
      return `held (release it with \`madmail queue release ${row.id}\`)`;
    case "delivering":
      return isLeaseLapsed(row, now) ? "delivering, with a lapsed lease (the server takes it up again)" : "being delivered right now";
    case "delivered":
      return "delivered already";
    case "dead":
      return `dead (retry it with \`madmail queue retry ${row.id}\`)`;
  }
}

/** A live lease: someone is delivering it, and no admin change may race with the outcome. */
export function busyError(row: DeliveryRow, what: string): Error {
  const until = row.lease_until === null ? "" : ` (claimed until ${isoTime(row.lease_until)})`;
  return conflict(`queue entry ${row.id} is being delivered right now${until}; try to ${what} it again in a moment`);
}

export function entryJson(r: QueueListRow) {
  return {
    id: r.id,
    message_id: r.message_id,
    state: r.state,
    from: r.mail_from,
    rcpt_domain: r.rcpt_domain,
    rcpts: parseRcpts(r.rcpts),
    size: r.size,
    tries: r.tries,
    created_at: isoTime(r.created_at),
    next_attempt_at: waitsUntil(r),
    last_error: r.last_error,
    route: r.route,
    rerouted_to: r.rerouted_to,
  };
}

export const LIST_HEADERS = ["ID", "AGE", "SIZE", "FROM", "TO-DOMAIN", "RCPTS", "TRIES", "NEXT", "STATE", "LAST ERROR"];

export function listRow(r: QueueListRow, now: number): string[] {
  const rcpts = parseRcpts(r.rcpts);
  return [
    r.id,
    formatAge(now - r.created_at),
    formatSize(r.size),
    r.mail_from || "<>",
    r.rcpt_domain,
    (rcpts[0] ?? "-") + (rcpts.length > 1 ? ` +${rcpts.length - 1}` : ""),
    String(r.tries),
    nextAttempt(r, now),
    r.state,
    r.last_error === null ? "" : oneLine(r.last_error, 60),
  ];
}

/** When a waiting entry is tried next, ISO; null for entries that do not wait (as `-` in the table). */
export function waitsUntil(r: Pick<DeliveryRow, "state" | "next_attempt_at">): string | null {
  return r.state === "queued" || r.state === "deferred" ? isoTime(r.next_attempt_at) : null;
}

/** When a waiting entry is tried next: `now`, `in 5m`; `-` for entries that do not wait. */
export function nextAttempt(r: Pick<DeliveryRow, "state" | "next_attempt_at">, now: number): string {
  if (r.state !== "queued" && r.state !== "deferred") return "-";
  return r.next_attempt_at <= now ? "now" : `in ${formatAge(r.next_attempt_at - now)}`;
}

export function parseRcpts(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    if (Array.isArray(v)) return v.map(String);
  } catch {}
  return [json];
}

/** 45s, 12m, 3h5m, 2d4h: the largest unit, and from hours up the next one too. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  const [big, bigUnit, small, smallUnit] = s < 86400
    ? [Math.floor(s / 3600), "h", Math.floor((s % 3600) / 60), "m"]
    : [Math.floor(s / 86400), "d", Math.floor((s % 86400) / 3600), "h"];
  return `${big}${bigUnit}${small ? `${small}${smallUnit}` : ""}`;
}

/** 812, 4.2K, 13K, 1.5M: bytes in binary multiples, compact for a table column. */
export function formatSize(bytes: number): string {
  let n = bytes;
  for (const unit of ["", "K", "M", "G"]) {
    if (n < 1024 || unit === "G") return unit === "" ? String(n) : `${n < 10 ? n.toFixed(1).replace(/\.0$/, "") : Math.round(n)}${unit}`;
    n /= 1024;
  }
  return String(bytes);
}

import { oneLine } from "../../util/one-line.ts";
export { oneLine };

/** Multi-line text for a terminal: line ends kept, other control characters shown as \xNN. */
export function safeText(text: string): string {
  return text.replace(/\r\n/g, "\n").replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

export const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
