// Small probes for tests of asynchronous machinery: an fsync the test completes by hand, a
// view of whether a promise has settled, and the descriptors this process holds on a file.
import { readdirSync, readlinkSync } from "node:fs";

/** A fake fsync the test completes by hand; records when each one started. */
export function fakeFsync() {
  const calls: { dir: string; done: () => void; fail: (e: Error) => void }[] = [];
  const fsync = (dir = "") =>
    new Promise<void>((done, fail) => {
      calls.push({ dir, done, fail });
    });
  return { calls, fsync };
}

/** Whether `p` has settled yet, and its error if it failed. */
export function watch(p: Promise<unknown>) {
  const s = { settled: false, error: undefined as unknown };
  p.then(
    () => (s.settled = true),
    (e) => {
      s.settled = true;
      s.error = e;
    },
  );
  return s;
}

/** How many descriptors of this process are open on `path` (/proc/self/fd). */
export function fdsOpenOn(path: string): number {
  return readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false;
    }
  }).length;
}
