import { command } from "../_command.ts";
import { readArgs } from "../_args.ts";
import { existingDb } from "../_db.ts";
import { printJson, printTable } from "../_output.ts";
import { checkId, formatAge, formatSize, idArg, nextAttempt, oneLine, parseRcpts, resolveEntry, safeText, waitsUntil } from "./_format.ts";
import { HEADER_READ_LIMIT, findMessageHead, isLeaseLapsed, listAttempts } from "../../queue/queue-admin.repository.ts";
import { isoTime, tableTime } from "../../util/time.ts";

export default command({
  meta: { name: "show", description: "Show one queue entry: envelope, state, attempts and the message's header block (never the body)" },
  args: { ...idArg, ...readArgs },
  examples: ["madmail queue show 0jm3k2x9c4r7hq2d", "madmail queue show 0jm3k2x9c4 --json | jq '.attempts'"],
  run: ({ args }) => {
    const input = checkId(args.id);
    return existingDb(args, async ({ db }) => {
      const now = Date.now();
      const d = await resolveEntry(db, input);
      const m = await findMessageHead(db, d.message_id);
      const attempts = await listAttempts(db, d.id);
      const headers = m ? headerBlock(m.head, m.size) : { text: "", truncated: false };
      const rcpts = parseRcpts(d.rcpts);
      if (args.json) {
        return printJson({
          id: d.id,
          message_id: d.message_id,
          state: d.state,
          from: m?.mail_from ?? null,
          rcpt_domain: d.rcpt_domain,
          rcpts,
          size: m?.size ?? null,
          door: m?.door ?? null,
          auth_user: m?.auth_user ?? null,
          received_at: isoTime(m?.received_at),
          created_at: isoTime(d.created_at),
          updated_at: isoTime(d.updated_at),
          tries: d.tries,
          next_attempt_at: waitsUntil(d),
          lease_until: isoTime(d.lease_until),
          expires_at: isoTime(d.expires_at),
          route: d.route,
          rerouted_to: d.rerouted_to,
          last_error: d.last_error,
          attempts: attempts.map((a) => ({ at: isoTime(a.at), transport: a.transport, endpoint: a.endpoint, outcome: a.outcome, detail: a.detail, ms: a.ms })),
          headers: headers.text,
          headers_truncated: headers.truncated,
        });
      }
      const when = (ms: number) => `${tableTime(ms)} (${ms <= now ? `${formatAge(now - ms)} ago` : `in ${formatAge(ms - now)}`})`;
      const state = d.state === "delivering" && isLeaseLapsed(d, now) ? "delivering (lease lapsed: the server takes it up again)" : d.state;
      const fields: [string, string][] = [
        ["ID", d.id],
        ["Message", d.message_id],
        ["State", state],
        ["From", m ? m.mail_from || "<>" : "(message missing)"],
        ["To", rcpts.join(", ")],
        ["Domain", d.rcpt_domain],
        ["Size", m ? `${formatSize(m.size)} (${m.size} bytes)` : "-"],
        ["Door", m ? m.door + (m.auth_user ? ` (authenticated as ${m.auth_user})` : "") : "-"],
        ["Received", m ? when(m.received_at) : "-"],
        ["Tries", String(d.tries)],
        ["Next attempt", nextAttempt(d, now) === "-" ? "-" : when(d.next_attempt_at)],
        ...(d.state === "delivering" ? [["Lease until", d.lease_until === null ? "none" : when(d.lease_until)] as [string, string]] : []),
        ["Expires", when(d.expires_at)],
        ["Route", d.route ?? "-"],
        ["Rerouted to", d.rerouted_to ?? "-"],
        ["Last error", d.last_error === null ? "-" : oneLine(d.last_error, 1000)],
      ];
      const out = process.stdout;
      out.write(fields.map(([k, v]) => `${(k + ":").padEnd(14)}${v}`).join("\n") + "\n\nATTEMPTS\n");
      if (attempts.length) {
        printTable(
          ["TIME", "TRANSPORT", "ENDPOINT", "OUTCOME", "DETAIL", "MS"],
          attempts.map((a) => [tableTime(a.at), a.transport, oneLine(a.endpoint, 100), a.outcome, oneLine(a.detail ?? "", 100), a.ms === null ? "-" : String(a.ms)]),
        );
      } else {
        out.write("(none yet)\n");
      }
      out.write("\nHEADERS\n" + (m ? safeText(headers.text) + "\n" : "(message missing)\n"));
      if (headers.truncated) out.write(`(header block longer than ${HEADER_READ_LIMIT / 1024} KiB; cut there)\n`);
    });
  },
});

/**
 * The header block: the header fields before the first empty line (RFC 5322 section 2.1), CRLF
 * as LF; obsolete `Name : value` fields (section 4.5) and a leading mbox `From ` line count as
 * header lines. It also ends at the first line that is neither a field nor a folded
 * continuation, so that a message without the empty line never shows its body.
 */
function headerBlock(head: Uint8Array, size: number): { text: string; truncated: boolean } {
  const lines = new TextDecoder().decode(head).split(/\r?\n/);
  const complete = size <= head.length;
  // The last line of a partial read may be cut: leave it out.
  if (!complete) lines.pop();
  const out: string[] = [];
  for (const [i, line] of lines.entries()) {
    const field = /^[!-9;-~]+[ \t]*:/.test(line) || (i === 0 && line.startsWith("From "));
    if (!field && !(out.length && /^[ \t]/.test(line))) return { text: out.join("\n"), truncated: false };
    out.push(line);
  }
  return { text: out.join("\n"), truncated: !complete };
}
