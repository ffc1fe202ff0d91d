#!/usr/bin/env bun
// No colour codes in help and tables when stdout is not a terminal (pipes, scripts, tests).
if (!process.stdout.isTTY) process.env.NO_COLOR ??= "1";
export {};
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
