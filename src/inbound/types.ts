// What every door hands to the accept pipeline, and what it gets back.

export type Door = "mxdeliv" | "smtp" | "lmtp" | "submission" | "send" | "pull";

/**
 * Mail that starts here: a logged-in user (submission) or this host (`madmail send`). Only it
 * is DKIM-signed, bounces to its sender, and may not be a delivery report.
 */
export function startedHere(message: { door: string }): boolean {
  return message.door === "submission" || message.door === "send";
}

export interface Envelope {
  door: Door;
  /** Remote IP (or "local" for the CLI). */
  peer: string;
  /** Envelope sender; "" for the null sender (bounces). */
  mailFrom: string;
  rcpts: string[];
  body: Uint8Array;
  /** X-Madmail-Delivery-Id: a retried delivery with a known id is stored only once. */
  deliveryId?: string;
  /** The authenticated local user (submission). */
  authUser?: string;
  /** The exchanger partner that authenticated this /mxdeliv request with its token. */
  trustedPeer?: string;
}

/** Why a recipient is refused; each door maps these to its own replies (replies.ts). */
export type RejectReason =
  | "too_large" | "bad_address" | "relay_denied" | "policy" | "encryption" | "quota" | "unknown_user"
  /** Submission: the From: header is not the logged-in user's address. */
  | "sender_mismatch";

export type RcptVerdict =
  /** Stored durably (locally or in the queue), or knowingly dropped while answering success. */
  | { verdict: "accept"; stored: boolean; note?: "unknown_user" | "reserved" | "duplicate" | "partial_quota" }
  /** Silent dismiss: success answered, nothing kept, by policy. */
  | { verdict: "dismiss" }
  | { verdict: "reject"; reason: RejectReason; detail: string }
  /** Could not store now; the sender should retry. */
  | { verdict: "tempfail"; detail: string };

export interface AcceptResult {
  /** One verdict per envelope recipient, in order. */
  rcpts: RcptVerdict[];
  ms: number;
  /** When remote recipients were queued: the message and its delivery rows (one per domain). */
  queued?: { messageId: string; deliveryIds: string[] };
}

/** Durable local delivery, implemented by the mailbox store. */
export interface LocalDelivery {
  deliver(address: string, body: Uint8Array, opts?: { name?: string }): Promise<string>;
  read(address: string, id: string): Promise<Uint8Array | null>;
}
