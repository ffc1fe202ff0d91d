// What a transport reports. Transports know nothing of policy or routing (DESIGN.md §5).

export type TransportName = "https" | "http" | "smtp";

export interface RecipientRefusal {
  address: string;
  code: number;
  text: string;
}

export type TransportResult =
  /** Accepted; `refused` lists recipients the peer refused permanently (SMTP per-RCPT). */
  | { outcome: "delivered"; detail: string; refused: RecipientRefusal[] }
  | { outcome: "temporary"; detail: string }
  | { outcome: "permanent"; detail: string };

export interface OutboundMessage {
  mailFrom: string;
  rcpts: string[];
  body: Uint8Array;
  /** Stable across retries: the receiver stores a repeated id only once. */
  deliveryId: string;
}
