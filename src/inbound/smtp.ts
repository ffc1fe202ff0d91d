// The SMTP (MX) and LMTP doors. smtp-server owns the protocol; this file only checks
// recipients at RCPT and turns accept() verdicts into replies (replies.ts).
import { readFileSync } from "node:fs";
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
import type { ListenAddress } from "../db/settings.ts";
import type { Db } from "../db/open.ts";
import { log } from "../log.ts";
import { findUser } from "../store/users.repository.ts";
import { domainOf, normaliseAddress } from "../util/names.ts";
import type { Acceptor } from "./accept.ts";
import { isReservedLocalPart } from "./recipients.ts";
import { smtpReplyFor, smtpReplyForReason, toSmtpReply, type SmtpReply } from "./replies.ts";
import type { SnapshotSource } from "./snapshot.ts";
import type { RejectReason } from "./types.ts";

export type SmtpDoorKind = "smtp" | "lmtp";

export interface SmtpDoorOptions {
  kind: SmtpDoorKind;
  listen: ListenAddress;
  hostname: string;
  maxSize: number;
  tls: { cert: string; key: string } | null;
  db: Db;
  acceptor: Acceptor;
  snapshot: SnapshotSource;
}

export interface SmtpDoor {
  server: SMTPServer;
  port: number;
  close(): Promise<void>;
}

export async function startSmtpDoor(opts: SmtpDoorOptions): Promise<SmtpDoor> {
  const { kind, acceptor, snapshot, db } = opts;
  const tls = opts.tls ? { key: readFileSync(opts.tls.key), cert: readFileSync(opts.tls.cert) } : {};
  const server = new SMTPServer({
    ...tls,
    lmtp: kind === "lmtp",
    name: opts.hostname,
    banner: "madmail",
    size: opts.maxSize,
    // Mail servers do not authenticate to an MX; submission is a separate listener.
    authOptional: true,
    disabledCommands: opts.tls ? ["AUTH"] : ["AUTH", "STARTTLS"],
    disableReverseLookup: true,
    logger: false,
    maxClients: 1000,
    // Peers (Postfix over LMTP, smtp-source) reuse connections for many transactions; the
    // library's default cuts unauthenticated sessions off after 10 commands.
    maxAllowedUnauthenticatedCommands: false,
    socketTimeout: 5 * 60_000,
    closeTimeout: 5_000,

    onRcptTo(address, session, callback) {
      checkRecipient(address, session).then(
        (reason) => callback(reason ? smtpError(smtpReplyForReason(reason)) : undefined),
        (err) => {
          log.withTag(kind).error(err);
          callback(smtpError({ code: 451, text: "4.3.0 Temporary failure, try again later" }));
        },
      );
    },

    onData(stream, session, callback) {
      readMessage(stream, opts.maxSize).then(async (body) => {
        const rcpts = session.envelope.rcptTo.map((r) => r.address);
        if (!body) {
          const tooBig = smtpError(smtpReplyForReason("too_large"));
          return kind === "lmtp" ? callback(null, rcpts.map(() => tooBig) as never) : callback(tooBig);
        }
        const result = await acceptor.accept({
          door: kind,
          peer: session.remoteAddress,
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          rcpts,
          body,
        });
        if (kind === "lmtp") {
          callback(null, result.rcpts.map((v) => replyValue(smtpReplyFor(v))) as never);
        } else {
          const r = toSmtpReply(result.rcpts);
          r.code === 250 ? callback(null, r.text) : callback(smtpError(r));
        }
      }).catch((err) => {
        log.withTag(kind).error(err);
        callback(smtpError({ code: 451, text: "4.3.0 Temporary failure, try again later" }));
      });
    },
  });

  /** RCPT-time checks: relay (not a local domain), and for LMTP unknown users (so the MTA in
   * front can verify recipients). The MX answers unknown users like real ones. */
  async function checkRecipient(rcpt: SMTPServerAddress, session: SMTPServerSession): Promise<RejectReason | null> {
    const address = normaliseAddress(rcpt.address);
    if (!address) return "bad_address";
    const snap = await snapshot.get();
    if (!snap.localDomains.has(domainOf(address))) return kind === "lmtp" ? "unknown_user" : "relay_denied";
    if (kind !== "lmtp") return null;
    if (isReservedLocalPart(address)) return "unknown_user";
    const user = await findUser(db, address);
    if (!user) return "unknown_user";
    // Refuse at RCPT when the declared SIZE (or nothing at all) no longer fits.
    const declared = Number(session.envelope.mailFrom && (session.envelope.mailFrom.args as Record<string, string> | false || {}).SIZE) || 0;
    if (user.used_bytes + declared > (user.quota_bytes ?? snap.config["quota.default"])) return "quota";
    return null;
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.listen.port, opts.listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (err) => log.withTag(kind).warn(err.message));
  const addr = server.server.address();
  const port = typeof addr === "object" && addr ? addr.port : opts.listen.port;
  log.withTag(kind).info(`listening on ${opts.listen.host}:${port}${opts.tls ? " (STARTTLS)" : ""}`);
  return {
    server,
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function smtpError(r: SmtpReply): Error & { responseCode: number } {
  return Object.assign(new Error(r.text), { responseCode: r.code });
}

/** LMTP answers per recipient: a string for 250, an Error for anything else. */
function replyValue(r: SmtpReply): string | Error {
  return r.code === 250 ? r.text : smtpError(r);
}

/** Collects the message; null when it went over the limit (the rest is drained, not kept). */
function readMessage(stream: SMTPServerDataStream, limit: number): Promise<Uint8Array | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    stream.on("data", (c: Buffer) => {
      total += c.length;
      if (total <= limit) chunks.push(c);
    });
    stream.on("error", reject);
    stream.on("end", () => resolve(stream.sizeExceeded || total > limit ? null : Buffer.concat(chunks, total)));
  });
}
