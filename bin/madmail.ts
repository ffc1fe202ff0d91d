#!/usr/bin/env bun
// No colour codes in help and tables when stdout is not a terminal (pipes, scripts, tests).
if (!process.stdout.isTTY) process.env.NO_COLOR ??= "1";
// Before any file call starts Bun's I/O thread pool: see io-threads.ts.
import { widenIoThreadPool } from "../src/util/io-threads.ts";
widenIoThreadPool();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
