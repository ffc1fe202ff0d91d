// Messages queued a moment ago, kept in memory for their first delivery attempt. Under load the
// worker claims a row milliseconds after its commit, and reading the body back from the state
// file was one of the dearest queries of a relaying serve (31-76 µs per message, more than the
// INSERT that wrote it). The state file stays the truth: a row that is not here (evicted,
// retried, queued by another process, after a restart) is read from it as before.
import type { MessageRow } from "../db/schema.ts";

export interface RecentMessages {
  /** A committed message and how many delivery rows will ask for it. */
  remember(message: MessageRow, deliveries: number): void;
  /** The message, counting one use; forgotten after its last expected use. */
  take(id: string): MessageRow | undefined;
  /** Whether the message is kept (no use counted). */
  has(id: string): boolean;
  readonly bytes: number;
}

/** Bodies up to `maxBytes` in all (counting the buffers they are views of); the oldest go first when a new one needs the room. */
export function createRecentMessages(maxBytes = 16 * 1024 * 1024): RecentMessages {
  const kept = new Map<string, { message: MessageRow; uses: number; cost: number }>();
  let bytes = 0;
  const forget = (id: string) => {
    const e = kept.get(id);
    if (!e) return;
    kept.delete(id);
    bytes -= e.cost;
  };
  return {
    remember(message, deliveries) {
      // What keeping it holds in memory: a body may be a view of a larger buffer.
      const cost = message.body.buffer.byteLength;
      if (deliveries < 1 || cost > maxBytes) return;
      forget(message.id);
      while (bytes + cost > maxBytes) forget(kept.keys().next().value!);
      kept.set(message.id, { message, uses: deliveries, cost });
      bytes += cost;
    },
    take(id) {
      const e = kept.get(id);
      if (!e) return undefined;
      if (--e.uses <= 0) forget(id);
      return e.message;
    },
    has(id) {
      return kept.has(id);
    },
    get bytes() {
      return bytes;
    },
  };
}
