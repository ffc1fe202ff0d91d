// SMTP delivery through nodemailer's SMTP connection (no hand-rolled client): to an MX on
// port 25 with opportunistic STARTTLS, or to a smarthost. 5xx permanent, 4xx and connection
// errors temporary; per-recipient refusals are reported so that only those get a bounce.
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { OutboundMessage, RecipientRefusal, TransportResult } from "./types.ts";

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
      opts.signal?.removeEventListener("abort", onAbort);
      try {
        r.outcome === "delivered" ? conn.quit() : conn.close();
      } catch {}
      resolve(r);
    };
    const onAbort = () => finish({ outcome: "temporary", detail: "aborted (shutting down)" });
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    conn.once("error", (err: Error & { responseCode?: number }) => finish(classify(err)));
    conn.connect(() => {
      const send = () =>
        conn.send({ from: msg.mailFrom, to: msg.rcpts }, Buffer.from(msg.body), (err, info) => {
          if (err) return finish(classify(err as Error & { responseCode?: number }));
          const refused: RecipientRefusal[] = (info?.rejectedErrors ?? []).map((e) => {
            const ee = e as Error & { responseCode?: number; recipient?: string; response?: string };
            return { address: ee.recipient ?? "", code: ee.responseCode ?? 550, text: ee.response ?? ee.message };
          });
          finish({ outcome: "delivered", detail: info?.response ?? "250", refused });
        });
      if (opts.auth) {
        conn.login({ user: opts.auth.user, pass: opts.auth.pass }, (err) => (err ? finish(classify(err as Error & { responseCode?: number })) : send()));
      } else {
        send();
      }
    });
  });
}

function classify(err: Error & { responseCode?: number; response?: string; code?: string }): TransportResult {
  const code = err.responseCode;
  const detail = err.response ?? (err.code ? `${err.code}: ${err.message}` : err.message);
  if (code && code >= 500) return { outcome: "permanent", detail };
  return { outcome: "temporary", detail };
}
