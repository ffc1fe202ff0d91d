// What a transport reports. Transports know nothing of policy or routing (DESIGN.md §5).

export type TransportName = "https" | "http" | "smtp";

export interface RecipientRefusal {
  address: string;
  code: number;
  /** The peer's reply line, e.g. `550 5.1.1 no such user`. */
  text: string;
}

export type TransportResult =
  /**
   * The peer answered for each recipient: `refused` it refused for good, `deferred` only for
   * now (SMTP per-RCPT 5xx / 4xx), the others it accepted (possibly none).
   */
  | { outcome: "delivered"; detail: string; refused: RecipientRefusal[]; deferred?: RecipientRefusal[] }
  | { outcome: "temporary"; detail: string }
  | { outcome: "permanent"; detail: string };

export interface OutboundMessage {
  mailFrom: string;
  rcpts: string[];
  body: Uint8Array;
  /** Stable across retries: the receiver stores a repeated id only once. */
  deliveryId: string;
}

/** OpenSSL's and Node's names for a certificate that does not check out. */
const CERT_ERRORS = /CERT|SELF_SIGNED|self[- ]signed|UNABLE_TO_VERIFY|unable to verify|UNABLE_TO_GET_ISSUER|ALTNAME|certificate/;

/** What to add to a connection error that is a refused certificate: whose, and which setting decides. */
export function certHint(err: { code?: string; message: string }, host: string): string {
  return CERT_ERRORS.test(`${err.code} ${err.message}`) ? ` (the certificate of ${host} was not accepted: see delivery.tls_verify)` : "";
}
