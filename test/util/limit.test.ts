import { expect, test } from "bun:test";
import { createLimit } from "../../src/util/limit.ts";

test("createLimit runs at most `max` tasks at once, in FIFO order, and survives failures", async () => {
  const limit = createLimit(3);
  let running = 0;
  let peak = 0;
  const order: number[] = [];
  const results = await Promise.allSettled(
    Array.from({ length: 20 }, (_, i) =>
      limit(async () => {
        order.push(i);
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 1));
        running--;
        if (i % 5 === 0) throw new Error(`task ${i}`);
        return i;
      }),
    ),
  );
  expect(peak).toBe(3);
  expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
  expect(results.filter((r) => r.status === "rejected")).toHaveLength(4);
  // All slots were returned: three new tasks start at once.
  let started = 0;
  const gate = Promise.withResolvers<void>();
  const three = [1, 2, 3].map(() => limit(async () => { started++; await gate.promise; }));
  await new Promise((r) => setTimeout(r, 0));
  expect(started).toBe(3);
  gate.resolve();
  await Promise.all(three);
});
