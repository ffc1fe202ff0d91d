// Message bodies are held in memory from the first byte until they are stored. Their total
// across all doors is bounded, so that many large uploads at once cannot take the server's
// memory: at most 8 times limits.max_message_size (240 MiB at the default). A body that does
// not fit gets a temporary failure (HTTP 503, SMTP 451) and its sender retries later. One
// message of any allowed size always fits when nothing else is held.

let held = 0;

export const bodyBudget = {
  /** Counts `n` more bytes held, or refuses (false) when they would pass the bound. */
  take(n: number, maxMessage: number): boolean {
    if (held > 0 && held + n > 8 * maxMessage) return false;
    held += n;
    return true;
  },
  give(n: number): void {
    held -= n;
  },
  held: () => held,
};
