// The one place where verdicts become protocol replies. Answers that must not differ (unknown
// vs. real recipient on /mxdeliv) are made identical here.
import type { RcptVerdict, RejectReason } from "./types.ts";

export interface HttpReply {
  status: number;
  body: string;
}

const httpByReason: Record<RejectReason, HttpReply> = {
  too_large: { status: 413, body: "message too large" },
  bad_address: { status: 400, body: "bad request" },
  relay_denied: { status: 400, body: "bad request" },
  policy: { status: 403, body: "Forbidden" },
  encryption: { status: 403, body: "Encryption Needed: Invalid Unencrypted Mail" },
  quota: { status: 507, body: "quota" },
  unknown_user: { status: 400, body: "bad request" },
  sender_mismatch: { status: 403, body: "Forbidden" },
};

export const HTTP_OK: HttpReply = { status: 200, body: "OK" };
export const HTTP_ERROR: HttpReply = { status: 500, body: "error" };

/** Refusal that decides a single answer for all recipients, most decisive first. */
const PRECEDENCE = ["too_large", "policy", "sender_mismatch", "encryption", "bad_address", "relay_denied", "unknown_user", "quota"] as const;

/**
 * One answer for all recipients (/mxdeliv, SMTP DATA): a temporary failure if any recipient had
 * one, also when others were stored (a success would tell the sender that copy is ours to
 * deliver, and nothing here would retry it; with a delivery id the retry stores only the copies
 * that are missing, without one the stored recipients may get the message twice, which is
 * better than never); else success if any was accepted or dismissed; else the first refusal in
 * order of precedence (a message-level refusal such as policy or encryption applies to all
 * recipients alike; quota only when every recipient is over quota).
 */
function overall(verdicts: RcptVerdict[]): "ok" | "tempfail" | RejectReason {
  if (verdicts.some((v) => v.verdict === "tempfail")) return "tempfail";
  if (verdicts.some((v) => v.verdict === "accept" || v.verdict === "dismiss")) return "ok";
  return PRECEDENCE.find((r) => verdicts.some((v) => v.verdict === "reject" && v.reason === r)) ?? "tempfail";
}

export function toHttpReply(verdicts: RcptVerdict[]): HttpReply {
  const o = overall(verdicts);
  return o === "ok" ? HTTP_OK : o === "tempfail" ? HTTP_ERROR : httpByReason[o];
}

export interface SmtpReply {
  code: number;
  text: string;
}

const smtpByReason: Record<RejectReason, SmtpReply> = {
  too_large: { code: 552, text: "5.3.4 Message too big" },
  bad_address: { code: 501, text: "5.1.3 Bad recipient address syntax" },
  relay_denied: { code: 550, text: "5.7.1 Relaying denied" },
  policy: { code: 554, text: "5.7.1 Rejected by federation policy" },
  encryption: { code: 523, text: "5.7.1 Encryption Needed: Invalid Unencrypted Mail" },
  quota: { code: 552, text: "5.2.2 Mailbox full" },
  unknown_user: { code: 550, text: "5.1.1 User unknown" },
  sender_mismatch: { code: 553, text: "5.7.1 From: header must be the authenticated sender's address" },
};

export const SMTP_OK: SmtpReply = { code: 250, text: "2.0.0 Ok: queued" };
export const SMTP_TEMPFAIL: SmtpReply = { code: 451, text: "4.3.0 Temporary failure, try again later" };

export function smtpReplyFor(v: RcptVerdict): SmtpReply {
  switch (v.verdict) {
    case "accept":
    case "dismiss":
      return SMTP_OK;
    case "tempfail":
      return SMTP_TEMPFAIL;
    case "reject":
      return smtpByReason[v.reason];
  }
}

export function smtpReplyForReason(reason: RejectReason): SmtpReply {
  return smtpByReason[reason];
}

/** SMTP (not LMTP) answers DATA once for all recipients, with the same precedence as HTTP. */
export function toSmtpReply(verdicts: RcptVerdict[]): SmtpReply {
  const o = overall(verdicts);
  return o === "ok" ? SMTP_OK : o === "tempfail" ? SMTP_TEMPFAIL : smtpByReason[o];
}
