#!/usr/bin/env bun
// No colour codes in help and tables when stdout is not a terminal (pipes, scripts, tests).
if (!process.stdout.isTTY) process.env.NO_COLOR ??= "1";
// Before any file call starts Bun's I/O thread pool: see io-threads.ts.
import { widenIoThreadPool } from "../src/util/io-threads.ts";
widenIoThreadPool();
// `madmail queue list | head`: the reader has gone, so the output is finished. Quietly, as
// the shell's own tools end (without their SIGPIPE status, which would fail `set -o pipefail`).
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code !== "EPIPE") throw err;
  process.exit(0);
});
// HUP ends a process that has no handler for it, and `serve` installs its own only once its
// modules have loaded: a reload sent right after the start (a renewal hook, systemd) must not
// stop the server. serve.ts replaces this with the real handler.
if (process.argv.includes("serve")) process.on("SIGHUP", () => {});
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
