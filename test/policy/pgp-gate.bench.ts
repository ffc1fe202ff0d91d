// Throughput of the PGP gate (not a test): ./node_modules/.bin/bun test/policy/pgp-gate.bench.ts
import { checkEncryption } from "../../src/policy/pgp-gate.ts";
import { bigMessage, bytes, sample, sampleNames } from "./pgp-gate-fixtures.ts";

function time(label: string, msg: Uint8Array, minMs = 1000): void {
  const verdict = checkEncryption(msg);
  for (let i = 0; i < 50; i++) checkEncryption(msg); // warm up the JIT
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < minMs) {
    for (let i = 0; i < 10; i++) checkEncryption(msg);
    n += 10;
    t = performance.now();
  }
  const us = ((t - t0) * 1000) / n;
  console.log(`${label.padEnd(58)} ${String(msg.length).padStart(9)} B  ${us.toFixed(2).padStart(10)} µs/msg  ${JSON.stringify(verdict)}`);
}

for (const name of sampleNames()) time(name, bytes(sample(name)), 300);
time("30 MB armored SEIPD (5-octet length)", bytes(bigMessage(30 * 1024 * 1024)), 3000);
time("30 MB armored SEIPD (64 KiB partial chunks)", bytes(bigMessage(30 * 1024 * 1024, true)), 3000);
