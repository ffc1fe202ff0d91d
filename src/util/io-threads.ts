// Bun runs file system calls (open, write, fsync, rename, fdatasync of the WAL) on a thread
// pool of UV_THREADPOOL_SIZE threads, by default one per CPU core. Each durable Maildir write
// holds a pool thread for as long as its fsync takes: on a two-core host two fsyncs run at a
// time, so with the disk answering in 10 ms (a busy shared disk) a server stores at most 200
// messages a second, and fsyncs that could share one journal commit wait in line instead.
// (Postfix, with one process per delivery, has no such limit.)
//
// The pool reads the variable from the C environment when it starts (the first asynchronous
// file call); process.env does not reach it, so libc's setenv sets it before anything runs.
// A value the sysadmin sets in the environment is left alone.

import { availableParallelism } from "node:os";
import { loadLibc } from "./libc.ts";

/** Pool threads when UV_THREADPOOL_SIZE is not set: 16, or one per core on bigger hosts. */
export const DEFAULT_IO_THREADS = Math.max(16, availableParallelism());

export function widenIoThreadPool(): void {
  if (process.env.UV_THREADPOOL_SIZE || process.platform !== "linux") return;
  // No C library found: Bun's default pool, which works, only slower.
  loadLibc()?.setenv("UV_THREADPOOL_SIZE", String(DEFAULT_IO_THREADS), false);
}
