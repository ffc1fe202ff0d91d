import { expect, test } from "bun:test";
import { createByteBudget } from "../../src/queue/body-bytes.ts";

test("bodies under way are bounded in bytes: later ones wait in order, one of any size goes when nothing is held, a release counts once", async () => {
  const b = createByteBudget();
  const order: string[] = [];
  const r1 = await b.take(60, 100);
  const big = b.take(500, 100).then((r) => (order.push("big"), r)); // over the bound: waits for an empty budget
  const small = b.take(10, 100).then((r) => (order.push("small"), r)); // fits, but waits its turn behind big
  await Bun.sleep(10);
  expect(order).toEqual([]);
  expect(b.held).toBe(60);
  r1();
  r1(); // twice: no effect
  const rBig = await big;
  await Bun.sleep(10);
  expect(order).toEqual(["big"]); // alone, since nothing else was held
  expect(b.held).toBe(500);
  rBig();
  (await small)();
  expect(order).toEqual(["big", "small"]);
  expect(b.held).toBe(0);
});
