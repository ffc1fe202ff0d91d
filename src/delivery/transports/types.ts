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
