// The SMTP (MX) and LMTP doors. smtp-server owns the protocol; this file only checks
// recipients at RCPT and turns accept() verdicts into replies (replies.ts).
import type { Socket } from "node:net";
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
import type { ListenAddress } from "../db/settings.ts";
import type { Db } from "../db/open.ts";
import { errorText, log } from "../log.ts";
import { bodyBudget } from "./body-budget.ts";
import { findUser } from "../store/users.repository.ts";
import { verifyPassword } from "../util/password.ts";
import { oneLine } from "../util/one-line.ts";
import { domainOf, normaliseAddress } from "../util/names.ts";
import type { Acceptor } from "./accept.ts";
import { isReservedLocalPart } from "./recipients.ts";
import { SMTP_TEMPFAIL, smtpReplyFor, smtpReplyForReason, toSmtpReply, type SmtpReply } from "./replies.ts";
import type { SnapshotSource } from "./snapshot.ts";
import type { RejectReason } from "./types.ts";

/** Recipients per SMTP/LMTP transaction (Postfix's smtpd_recipient_limit default); more get 452 4.5.3. */
export const MAX_RECIPIENTS = 1000;
/** Open connections per client address on the SMTP and submission doors (not LMTP: the MTA in front). */
export const MAX_CONNECTIONS_PER_CLIENT = 50;
/** Refused recipients per connection before it is closed (Postfix's smtpd_hard_error_limit). */
export const MAX_RCPT_ERRORS = 20;

export type SmtpDoorKind = "smtp" | "lmtp" | "submission";

export interface SmtpDoorOptions {
  kind: SmtpDoorKind;
  listen: ListenAddress;
  hostname: string;
  maxSize: number;
  /** PEM certificate chain and key (util/tls-files.ts), or null: no STARTTLS. */
  tls: { cert: string; key: string } | null;
  /** Submission on port 465: TLS from the first byte. */
  implicitTls?: boolean;
  db: Db;
  acceptor: Acceptor;
  snapshot: SnapshotSource;
}

export interface SmtpDoor {
  server: SMTPServer;
  port: number;
  close(): Promise<void>;
  /** A renewed certificate: used for the TLS handshakes (STARTTLS or implicit) of new connections. */
  updateTls(tls: { cert: string; key: string }): void;
}

/** How long failed logins from an address count towards its delay. */
const FAILED_AUTH_MEMORY_MS = 15 * 60_000;

export async function startSmtpDoor(opts: SmtpDoorOptions): Promise<SmtpDoor> {
  const { kind, acceptor, snapshot, db } = opts;
  const tls = opts.tls ? { key: opts.tls.key, cert: opts.tls.cert } : {};
  const submission = kind === "submission";
  // Plain connections that may (and, to log in, must) turn to TLS.
  const startTls = !!opts.tls && !opts.implicitTls;
  // Failed logins per client address, forgotten FAILED_AUTH_MEMORY_MS after the last one.
  const failedAuth = new Map<string, { n: number; at: number }>();
  /** The failures of an address that still count. */
  const recentFailures = (peer: string, now: number): number => {
    const f = failedAuth.get(peer);
    return f && now - f.at < FAILED_AUTH_MEMORY_MS ? f.n : 0;
  };
  // Password checks under way per client address. An address with recent failures gets one at a
  // time, so that a password guesser cannot hold every check slot (util/password.ts) while
  // others wait to log in; many users behind one address log in side by side as before.
  const checking = createCounts();
  // Failed logins per connection: the third ends it (as Dovecot's and Postfix's limits).
  const sessionFailures = new WeakMap<object, number>();
  // Refused recipients per connection (MAX_RCPT_ERRORS).
  const rcptErrors = new WeakMap<object, number>();
  // Open connections per client address, and the sessions counted in it.
  const perClient = createCounts();
  const counted = new WeakSet<object>();
  // Submission's RCPT tells local recipients from remote ones without waiting (pipelining);
  // kept as fresh as hostname and size (below). A domain added in that second is checked
  // after DATA instead.
  let localDomains = (await snapshot.get()).localDomains;
  const server = new SMTPServer({
    ...tls,
    secure: !!opts.implicitTls,
    lmtp: kind === "lmtp",
    name: opts.hostname,
    banner: "madmail",
    size: opts.maxSize,
    // Mail servers do not authenticate to an MX or over LMTP; submission requires AUTH.
    authOptional: !submission,
    authMethods: ["PLAIN", "LOGIN"],
    // Without a certificate (a loopback-only default) AUTH has to work in the clear; with one,
    // clients must STARTTLS first.
    allowInsecureAuth: !opts.tls,
    disabledCommands: [...(submission ? [] : ["AUTH"]), ...(opts.tls && !opts.implicitTls ? [] : ["STARTTLS"])],

    onAuth(auth, session, callback) {
      const address = normaliseAddress(auth.username ?? "");
      const peer = session.remoteAddress;
      if (checking.get(peer) && recentFailures(peer, Date.now())) {
        log.withTag(kind).warn(`peer=${peer} AUTH refused: failed logins from this address, and another one is being checked`);
        return callback(smtpError({ code: 454, text: "4.7.0 Another login from your address is in progress, try again" }));
      }
      checking.add(peer);
      const check = async () => {
        // Users of a domain no longer served here (`domain remove` keeps them) cannot log in.
        const local = !!address && (await snapshot.get()).localDomains.has(domainOf(address));
        const user = local ? await findUser(db, address) : undefined;
        // The same slow check whether or not the user exists: no timing tell.
        const ok = await verifyPassword(auth.password ?? "", user?.password_hash ?? null);
        return ok && user ? user.address : null;
      };
      check().finally(() => checking.remove(peer)).then(async (user) => {
        if (user) {
          failedAuth.delete(peer);
          return callback(null, { user });
        }
        // Each failure from an address costs it more time (capped at 5 s) before the answer.
        const now = Date.now();
        const n = recentFailures(peer, now) + 1;
        failedAuth.delete(peer); // re-inserted last: the map stays in order of the last failure
        failedAuth.set(peer, { n, at: now });
        // Oldest first: a scan from the front ends at the first address still remembered.
        for (const [ip, f] of failedAuth) {
          if (now - f.at < FAILED_AUTH_MEMORY_MS) break;
          failedAuth.delete(ip);
        }
        // One line per failure, in a fixed form for fail2ban and the like.
        log.withTag(kind).warn(`peer=${peer} AUTH failed user=${JSON.stringify(oneLine(auth.username ?? "", 100))} failures=${n}`);
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(n, 5))));
        const here = (sessionFailures.get(session) ?? 0) + 1;
        sessionFailures.set(session, here);
        if (here >= 3) return callback(smtpError({ code: 421, text: "4.7.0 Too many failed logins, closing connection" }));
        callback(smtpError({ code: 535, text: "5.7.8 Authentication credentials invalid" }));
      }, (err) => {
        log.withTag(kind).error(`peer=${peer} AUTH answered 454: ${errorText(err)}`);
        callback(smtpError({ code: 454, text: "4.7.0 Temporary authentication failure" }));
      });
    },

    onConnect(session, callback) {
      // One address cannot take every connection slot of a door (maxClients) from the others.
      if (kind !== "lmtp") {
        const ip = session.remoteAddress;
        const open = perClient.get(ip);
        if (open >= MAX_CONNECTIONS_PER_CLIENT) {
          log.withTag(kind).warn(`peer=${ip} refused: ${open} connections open from this address`);
          return callback(smtpError({ code: 421, text: "4.7.0 Too many connections from your address, try again later" }));
        }
        perClient.add(ip);
        counted.add(session);
      }
      // With a certificate, AUTH is not even offered before STARTTLS (as Postfix's
      // smtpd_tls_auth_only): a client that sees it in the EHLO reply sends its password, in
      // the clear, before it learns it should not have. The session's own list replaces the
      // server's until the TLS handshake is done.
      if (submission && startTls) session.disabledCommands = ["AUTH"];
      callback();
    },

    onClose(session) {
      if (counted.delete(session)) perClient.remove(session.remoteAddress);
    },
    onSecure(_socket, session, callback) {
      delete session.disabledCommands;
      callback();
    },

    onMailFrom(address, session, callback) {
      if (!submission) return callback();
      // smtp-server requires AUTH only while AUTH is available; before STARTTLS it is not.
      if (!session.user) {
        return callback(smtpError(startTls && !session.secure
          ? { code: 530, text: "5.7.0 Must issue a STARTTLS command first" }
          : { code: 530, text: "5.7.0 Authentication required" }));
      }
      // An authenticated user sends as itself only.
      const from = normaliseAddress(address.address);
      if (!from || from !== session.user) return callback(smtpError({ code: 553, text: "5.7.1 Sender address not owned by the authenticated user" }));
      callback();
    },
    disableReverseLookup: true,
    logger: false,
    maxClients: 1000,
    // Peers (Postfix over LMTP, smtp-source) reuse connections for many transactions; the
    // library's default cuts unauthenticated sessions off after 10 commands.
    maxAllowedUnauthenticatedCommands: false,
    socketTimeout: 5 * 60_000,
    closeTimeout: 5_000,

    onRcptTo(address, session, done) {
      // A client that keeps naming recipients we refuse (a dictionary attack, a relay probe) is
      // let go after MAX_RCPT_ERRORS, as Postfix does; an MTA in front on LMTP is not.
      const callback = (err?: Error) => {
        if (err && kind !== "lmtp" && (err as Error & { responseCode?: number }).responseCode! >= 500) {
          const n = (rcptErrors.get(session) ?? 0) + 1;
          rcptErrors.set(session, n);
          if (n >= MAX_RCPT_ERRORS) {
            log.withTag(kind).warn(`peer=${session.remoteAddress} closed after ${n} refused recipients`);
            return done(smtpError({ code: 421, text: "4.7.0 Too many errors, closing connection" }));
          }
        }
        done(err);
      };
      // As Postfix's smtpd_recipient_limit: one transaction cannot hold the server for minutes
      // (every recipient is looked up at DATA). The sender sends the rest in another one.
      const known = session.envelope.rcptTo;
      if (known.length >= MAX_RECIPIENTS && !known.some((r) => r.address.toLowerCase() === address.address.toLowerCase())) {
        return callback(smtpError({ code: 452, text: "4.5.3 Too many recipients" }));
      }
      // Authenticated users may write to anyone (the pipeline decides after DATA): remote
      // recipients are answered at once (from the cached snapshot), so that the replies to a
      // pipelined MAIL, RCPT, DATA leave together.
      if (submission) {
        const rcpt = normaliseAddress(address.address);
        if (!rcpt) return callback(smtpError(smtpReplyForReason("bad_address")));
        // A local recipient must exist: a user's typo is refused now instead of vanishing (the
        // MX hides unknown users from strangers; a logged-in user is no stranger).
        if (!localDomains.has(domainOf(rcpt))) return callback();
        findUser(db, rcpt).then((user) => {
          callback(user && !isReservedLocalPart(rcpt) ? undefined : smtpError(smtpReplyForReason("unknown_user")));
        }, (err) => {
          log.withTag(kind).error(`peer=${session.remoteAddress} RCPT answered 451: ${errorText(err)}`);
          callback(smtpError(SMTP_TEMPFAIL));
        });
        return;
      }
      checkRecipient(address, session).then(
        (reason) => {
          if (!reason && kind === "lmtp") acceptedRcpts(session).push(address.address);
          callback(reason ? smtpError(smtpReplyForReason(reason)) : undefined);
        },
        (err) => {
          log.withTag(kind).error(`peer=${session.remoteAddress} RCPT answered 451: ${errorText(err)}`);
          callback(smtpError(SMTP_TEMPFAIL));
        },
      );
    },

    onData(stream, session, callback) {
      // LMTP answers once per RCPT that got a 250 (RFC 2033 §4.2), also when one address came
      // twice: smtp-server keeps it once in the envelope, accept() stores it once.
      const lmtpReplies = <T>(each: (address: string) => T) => callback(null, acceptedRcpts(session).map(each) as never);
      const held = { bytes: 0 };
      // The limit as accept() and /mxdeliv see it now (the snapshot), not as the doors' options
      // had it at the last one-second look: a message just under a raised limit is not cut off.
      // The stream holds what arrives meanwhile.
      snapshot.get().then((snap) => readMessage(stream, snap.config["limits.max_message_size"], held)).then(async (body) => {
        const rcpts = session.envelope.rcptTo.map((r) => r.address);
        if (!body) {
          const tooBig = smtpError(smtpReplyForReason("too_large"));
          return kind === "lmtp" ? lmtpReplies(() => tooBig) : callback(tooBig);
        }
        const result = await acceptor.accept({
          door: kind,
          peer: session.remoteAddress,
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          rcpts,
          body,
          authUser: typeof session.user === "string" ? session.user : undefined,
        });
        if (kind === "lmtp") {
          const byAddress = new Map(rcpts.map((a, i) => [a.toLowerCase(), replyValue(smtpReplyFor(result.rcpts[i]!))]));
          lmtpReplies((a) => byAddress.get(a.toLowerCase()) ?? smtpError(SMTP_TEMPFAIL));
        } else {
          const r = toSmtpReply(result.rcpts);
          r.code === 250 ? callback(null, r.text) : callback(smtpError(r));
        }
      }).catch((err) => {
        if (err instanceof ServerBusy) {
          log.withTag(kind).warn(`peer=${session.remoteAddress} DATA answered 451 4.3.1: ${bodyBudget.held()} bytes of messages already in memory`);
          const busy = smtpError({ code: 451, text: "4.3.1 Insufficient system resources, try again later" });
          return kind === "lmtp" ? lmtpReplies(() => busy) : callback(busy);
        }
        if (err instanceof ClientGone) {
          // The client's to hear nothing: it closed the connection before the end of DATA.
          log.withTag(kind).info(`peer=${session.remoteAddress} connection closed during DATA, nothing stored`);
          return callback(err);
        }
        log.withTag(kind).error(`peer=${session.remoteAddress} DATA answered 451: ${errorText(err)}`);
        log.withTag(kind).debug(err);
        if (kind === "lmtp") lmtpReplies(() => smtpError(SMTP_TEMPFAIL));
        else callback(smtpError(SMTP_TEMPFAIL));
      }).finally(() => bodyBudget.give(held.bytes));
    },
  });

  /** RCPT-time checks: relay (not a local domain), and for LMTP unknown users (so the MTA in
   * front can verify recipients). The MX answers unknown users like real ones. */
  async function checkRecipient(rcpt: SMTPServerAddress, session: SMTPServerSession): Promise<RejectReason | null> {
    const address = normaliseAddress(rcpt.address);
    if (!address) return "bad_address";
    const snap = await snapshot.get();
    if (!snap.localDomains.has(domainOf(address))) {
      if (kind === "smtp" && snap.config["relay.domains"].includes(domainOf(address))) return null;
      return kind === "lmtp" ? "unknown_user" : "relay_denied";
    }
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
  // A client's broken TLS or reset connection is the client's affair: an info line naming it.
  server.on("error", (err: Error & { remoteAddress?: string }) => log.withTag(kind).info(`peer=${err.remoteAddress ?? "unknown"} connection error: ${errorText(err)}`));
  // hostname and limits.max_message_size follow the settings without a restart: smtp-server
  // reads its options for each new connection (the name in the greeting) and at each EHLO and
  // DATA (SIZE). Checked every second; the snapshot reloads only when the file changed.
  const follow = setInterval(() => {
    snapshot.get().then((snap) => {
      server.options.name = snap.config.hostname;
      server.options.size = snap.config["limits.max_message_size"];
      localDomains = snap.localDomains;
    }, () => {});
  }, 1000);
  follow.unref();
  // Plain connections (STARTTLS or none): replies to pipelined commands leave in one packet.
  if (!opts.implicitTls) server.server.on("connection", coalesceReplies);
  const addr = server.server.address();
  const port = typeof addr === "object" && addr ? addr.port : opts.listen.port;
  log.withTag(kind).info(`listening on ${opts.listen.host}:${port}${opts.implicitTls ? " (TLS)" : opts.tls ? " (STARTTLS)" : ""}`);
  return {
    server,
    port,
    close: () => {
      clearInterval(follow);
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
    updateTls: ({ cert, key }) => server.updateSecureContext({ cert, key }),
  };
}

/**
 * smtp-server writes every reply on its own, so a pipelined MAIL, RCPT, DATA costs three
 * send() calls here and three reads at the client. Replies written in the same microtask
 * checkpoint go out together. Replies that precede a change of the connection (220 greeting
 * and STARTTLS, 221, 421) and anything before end() go out at once, in order.
 */
function coalesceReplies(socket: Socket): void {
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  const end = socket.end.bind(socket) as (...args: unknown[]) => Socket;
  let pending = "";
  const flush = () => {
    if (!pending) return;
    const text = pending;
    pending = "";
    if (!socket.destroyed) write(text);
  };
  socket.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (typeof chunk !== "string" || rest.length || /^(220|221|421)[ -]/.test(chunk)) {
      flush();
      return write(chunk, ...rest);
    }
    if (!pending) queueMicrotask(flush);
    pending += chunk;
    return true;
  }) as Socket["write"];
  socket.end = ((...args: unknown[]) => {
    flush();
    return end(...args);
  }) as Socket["end"];
}

function smtpError(r: SmtpReply): Error & { responseCode: number } {
  return Object.assign(new Error(r.text), { responseCode: r.code });
}

/** LMTP answers per recipient: a string for 250, an Error for anything else. */
function replyValue(r: SmtpReply): string | Error {
  return r.code === 250 ? r.text : smtpError(r);
}

/**
 * The message, or null when it is over `limit`. `held` counts what it takes from the body budget
 * (the caller gives it back once the message is stored); a message the budget has no room for
 * is read to its end and rejected with ServerBusy.
 */
function readMessage(stream: SMTPServerDataStream, limit: number, held: { bytes: number }): Promise<Uint8Array | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let busy = false;
    stream.on("data", (c: Buffer) => {
      total += c.length;
      if (total > limit || busy) return;
      if (!bodyBudget.take(c.length, limit)) {
        busy = true;
        return;
      }
      held.bytes += c.length;
      chunks.push(c);
    });
    stream.on("error", (err) => reject(new ClientGone(err.message)));
    stream.on("end", () => {
      if (stream.sizeExceeded || total > limit) return resolve(null);
      if (busy) return reject(new ServerBusy());
      resolve(Buffer.concat(chunks, total));
    });
  });
}

/** The bodies in memory already take their bound (body-budget.ts). */
class ServerBusy extends Error {}

/** The DATA stream broke: the client closed the connection before the final dot. */
class ClientGone extends Error {}

/** LMTP: the addresses of this transaction's RCPTs that got a 250, repeats included (a new envelope each transaction). */
const rcptsByEnvelope = new WeakMap<object, string[]>();
function acceptedRcpts(session: SMTPServerSession): string[] {
  let list = rcptsByEnvelope.get(session.envelope);
  if (!list) rcptsByEnvelope.set(session.envelope, (list = []));
  return list;
}

/** How many of something each key holds (connections, checks under way); a key at 0 is forgotten. */
function createCounts() {
  const n = new Map<string, number>();
  return {
    get: (key: string) => n.get(key) ?? 0,
    add: (key: string) => void n.set(key, (n.get(key) ?? 0) + 1),
    remove(key: string) {
      const left = (n.get(key) ?? 0) - 1;
      if (left > 0) n.set(key, left);
      else n.delete(key);
    },
  };
}
