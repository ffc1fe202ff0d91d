// Bodies of deliveries under way are bounded in bytes, as the doors bound bodies being
// received (inbound/body-budget.ts). Each delivery row reads its message back and signs a copy:
// a 30 MB message to 64 domains held 64 bodies and their signed copies at once (7 GB; to 24
// domains 2.8 GB, 0.8 GB with this bound), enough for the OOM killer, and after the restart
// every row was due again. Past the bound, further
// deliveries wait their turn (FIFO); one body of any size always goes when nothing else is held.

export interface ByteBudget {
  /** Waits until `n` bytes fit under `max`; returns the release. */
  take(n: number, max: number): Promise<() => void>;
  readonly held: number;
}

export function createByteBudget(): ByteBudget {
  let held = 0;
  const waiting: { n: number; max: number; go: () => void }[] = [];
  const fits = (n: number, max: number) => held === 0 || held + n <= max;
  const pump = () => {
    while (waiting.length && fits(waiting[0]!.n, waiting[0]!.max)) {
      const w = waiting.shift()!;
      held += w.n;
      w.go();
    }
  };
  return {
    async take(n, max) {
      if (!waiting.length && fits(n, max)) held += n;
      else await new Promise<void>((go) => waiting.push({ n, max, go }));
      let released = false;
      return () => {
        if (released) return;
        released = true;
        held -= n;
        pump();
      };
    },
    get held() {
      return held;
    },
  };
}
