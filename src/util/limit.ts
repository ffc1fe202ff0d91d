// A counting semaphore: at most `max` tasks run at once, the rest wait in FIFO order.
// The Maildir driver bounds the file descriptors it holds with it (with thousands of concurrent
// deliveries, unbounded opens fail with EMFILE under a 1024 descriptor limit, while the
// filesystem gains nothing from more than a few dozen fsyncs in flight); password checks bound
// their memory (util/password.ts).

export type Limit = <T>(task: () => Promise<T>) => Promise<T>;

export function createLimit(max: number): Limit {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async function limit<T>(task: () => Promise<T>): Promise<T> {
    if (active < max) active++;
    else await new Promise<void>((resolve) => waiting.push(resolve)); // the slot is handed over
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next(); // hand the slot to the next task; `active` stays the same
      else active--;
    }
  };
}
