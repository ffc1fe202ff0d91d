// SMTP delivery through nodemailer's SMTP connection (no hand-rolled client): to an MX on
// port 25 with opportunistic STARTTLS, or to a smarthost. A 5xx to the message (MAIL FROM,
// DATA) is permanent; 4xx, connection errors and anything that goes wrong before MAIL FROM
// (greeting, EHLO, STARTTLS, AUTH: the session, not the message) are temporary, as Postfix
// defers them. Per-recipient refusals are reported, 5xx and 4xx apart, so that only the 5xx
// ones get a bounce and the 4xx ones are tried again.
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { isIP } from "node:net";
import { certHint, type OutboundMessage, type RecipientRefusal, type TransportResult } from "./types.ts";

/** `u@1.2.3.4` -> `u@[1.2.3.4]`, `u@2001:db8::1` -> `u@[IPv6:2001:db8::1]` (RFC 5321 §4.1.3); names unchanged. */
export function smtpAddress(address: string): string {
  const at = address.lastIndexOf("@");
  const host = address.slice(at + 1);
  const kind = at > 0 ? isIP(host) : 0;
  return kind === 4 ? `${address.slice(0, at)}@[${host}]` : kind === 6 ? `${address.slice(0, at)}@[IPv6:${host}]` : address;
}

export interface SmtpOptions {
  host: string;
  port: number;
  /** Our name in EHLO. */
  name: string;
  /** starttls-required, starttls-if-offered, implicit TLS, or plain. */
  tls: "required" | "opportunistic" | "implicit" | "none";
  verifyTls: boolean;
  timeoutMs: number;
  auth?: { user: string; pass: string };
  signal?: AbortSignal;
}

export function sendSmtp(msg: OutboundMessage, opts: SmtpOptions): Promise<TransportResult> {
  return new Promise((resolve) => {
    const conn = new SMTPConnection({
      host: opts.host,
      port: opts.port,
      name: opts.name,
      secure: opts.tls === "implicit",
      requireTLS: opts.tls === "required",
      opportunisticTLS: opts.tls === "opportunistic",
      ignoreTLS: opts.tls === "none",
      tls: { rejectUnauthorized: opts.verifyTls, servername: /^[\d.]+$|:/.test(opts.host) ? undefined : opts.host },
      connectionTimeout: Math.min(opts.timeoutMs, 15_000),
      greetingTimeout: Math.min(opts.timeoutMs, 30_000),
      socketTimeout: opts.timeoutMs,
      logger: false,
    });
    let settled = false;
    const finish = (r: TransportResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      opts.signal?.removeEventListener("abort", onAbort);
      try {
        r.outcome === "delivered" ? conn.quit() : conn.close();
      } catch {}
      resolve(r);
    };
    const onAbort = () => finish({ outcome: "temporary", detail: "aborted (shutting down)" });
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    // The whole attempt, not only a silent socket: a peer trickling bytes is cut off too.
    const deadline = setTimeout(() => finish({ outcome: "temporary", detail: `timed out after ${opts.timeoutMs / 1000} s (delivery.timeout)` }), opts.timeoutMs);
    let session = true; // before MAIL FROM: a failure belongs to the session, not the message
    conn.once("error", (err: SmtpError) => finish(classify(err, session, opts.host)));
    conn.connect(() => {
      const send = () => {
        session = false;
        // Our spelling back from the one on the wire, for the refusals.
        const ours = new Map(msg.rcpts.map((r) => [smtpAddress(r).toLowerCase(), r]));
        const envelope = { from: msg.mailFrom && smtpAddress(msg.mailFrom), to: msg.rcpts.map(smtpAddress), size: msg.body.length, use8BitMime: has8bit(msg.body) };
        conn.send(envelope, Buffer.from(msg.body), (err, info) => {
          const rcptErrors = (err ? (err as SmtpError).rejectedErrors : info?.rejectedErrors) ?? [];
          // Every recipient refused at RCPT: an answer per recipient, like a partial one.
          if (err && !((err as SmtpError).command === "RCPT TO" && rcptErrors.length)) return finish(classify(err as SmtpError, false, opts.host));
          const each = rcptErrors.map((e): RecipientRefusal => {
            const ee = e as SmtpError & { recipient?: string };
            const wire = ee.recipient ?? "";
            return { address: ours.get(wire.toLowerCase()) ?? wire, code: ee.responseCode ?? 550, text: ee.response ?? ee.message };
          });
          finish({
            outcome: "delivered",
            detail: err ? "no recipient accepted" : (info?.response ?? "250"),
            refused: each.filter((r) => r.code >= 500),
            deferred: each.filter((r) => r.code < 500),
          });
        });
      };
      if (opts.auth) {
        conn.login({ user: opts.auth.user, pass: opts.auth.pass }, (err) => (err ? finish(classify(err as SmtpError, true, opts.host)) : send()));
      } else {
        send();
      }
    });
  });
}

type SmtpError = Error & { responseCode?: number; response?: string; code?: string; command?: string; rejectedErrors?: Error[] };

function classify(err: SmtpError, session: boolean, host: string): TransportResult {
  const code = err.responseCode;
  const reply = err.response ?? (err.code ? `${err.code}: ${err.message}${certHint(err, host)}` : err.message);
  // Which step failed, when that is not the message: "STARTTLS: 502 ...", "AUTH PLAIN: 535 ...".
  const detail = session && err.command && err.command !== "CONN" ? `${err.command}: ${reply}` : reply;
  if (code && code >= 500 && !session) return { outcome: "permanent", detail };
  return { outcome: "temporary", detail };
}

/** Whether the message has bytes over 127 (sent with BODY=8BITMIME where the peer offers it). */
function has8bit(body: Uint8Array): boolean {
  for (let i = 0; i < body.length; i++) if (body[i]! > 127) return true;
  return false;
}
