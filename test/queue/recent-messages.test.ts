// The worker's memory of just-queued messages (src/queue/recent-messages.ts): one entry per
// expected delivery, gone after the last; bounded by the bytes of the bodies, oldest first.
import { expect, test } from "bun:test";
import type { MessageRow } from "../../src/db/schema.ts";
import { createRecentMessages } from "../../src/queue/recent-messages.ts";

const msg = (id: string, size: number): MessageRow => ({
  id, mail_from: "alice@a.test", body: new Uint8Array(size).fill(65), size, door: "submission", auth_user: "alice@a.test", received_at: 1,
});

test("a message is handed out once per delivery row, then read from the state file", () => {
  const recent = createRecentMessages(1000);
  const m = msg("m1", 100);
  recent.remember(m, 2);
  expect(recent.take("m1")).toBe(m);
  expect(recent.bytes).toBe(100);
  expect(recent.take("m1")).toBe(m);
  expect(recent.take("m1")).toBeUndefined();
  expect(recent.bytes).toBe(0);
  expect(recent.take("never-queued")).toBeUndefined();
});

test("the oldest bodies make room for new ones; one larger than the whole bound is not kept", () => {
  const recent = createRecentMessages(1000);
  for (const id of ["a", "b", "c"]) recent.remember(msg(id, 400), 1);
  // c needed room: a went.
  expect(recent.bytes).toBe(800);
  expect(recent.take("a")).toBeUndefined();
  expect(recent.take("b")?.id).toBe("b");
  expect(recent.take("c")?.id).toBe("c");
  recent.remember(msg("huge", 1001), 1);
  expect(recent.take("huge")).toBeUndefined();
  expect(recent.bytes).toBe(0);
  // Remembered again (the same id): counted once.
  recent.remember(msg("d", 300), 1);
  recent.remember(msg("d", 300), 1);
  expect(recent.bytes).toBe(300);
});

test("a message without delivery rows is not kept", () => {
  const recent = createRecentMessages(1000);
  recent.remember(msg("x", 10), 0);
  expect(recent.take("x")).toBeUndefined();
  expect(recent.bytes).toBe(0);
});

test("a body that is a view of a larger buffer counts that buffer", () => {
  const recent = createRecentMessages(1000);
  const slab = new Uint8Array(600);
  recent.remember({ ...msg("v", 10), body: slab.subarray(0, 10) }, 1);
  expect(recent.bytes).toBe(600);
  recent.remember({ ...msg("w", 10), body: new Uint8Array(600).subarray(0, 10) }, 1);
  expect(recent.take("v")).toBeUndefined(); // made room
  expect(recent.bytes).toBe(600);
});
