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
};

export const HTTP_OK: HttpReply = { status: 200, body: "OK" };
export const HTTP_ERROR: HttpReply = { status: 500, body: "error" };

/**
 * /mxdeliv has one answer for all recipients: success if any recipient was accepted or
 * dismissed; otherwise the first refusal in order of precedence (a message-level refusal
 * such as policy or encryption applies to all recipients alike; 507 only when every
 * recipient is over quota).
 */
export function toHttpReply(verdicts: RcptVerdict[]): HttpReply {
  if (verdicts.some((v) => v.verdict === "accept" || v.verdict === "dismiss")) return HTTP_OK;
  if (verdicts.some((v) => v.verdict === "tempfail")) return HTTP_ERROR;
  const reasons = new Set(verdicts.map((v) => (v.verdict === "reject" ? v.reason : "bad_address")));
  for (const r of ["too_large", "policy", "encryption", "bad_address", "relay_denied", "unknown_user", "quota"] as const) {
    if (reasons.has(r)) return httpByReason[r];
  }
  return HTTP_ERROR;
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
  if (verdicts.some((v) => v.verdict === "accept" || v.verdict === "dismiss")) return SMTP_OK;
  if (verdicts.some((v) => v.verdict === "tempfail")) return SMTP_TEMPFAIL;
  const first = (["too_large", "policy", "encryption", "bad_address", "relay_denied", "unknown_user", "quota"] as const)
    .find((r) => verdicts.some((v) => v.verdict === "reject" && v.reason === r));
  return first ? smtpByReason[first] : SMTP_TEMPFAIL;
}
