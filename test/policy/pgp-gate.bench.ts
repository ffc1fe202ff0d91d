// Speed of the PGP gate (a script, not a test: timings do not belong in CI):
//   ./node_modules/.bin/bun test/policy/pgp-gate.bench.ts
import { checkEncryption } from "../../src/policy/pgp-gate.ts";
import { bigMessage, bytes, sample, sampleNames } from "./pgp-gate-fixtures.ts";

/** Best of several rounds, after a warm-up, in µs per message. */
function measure(msg: Uint8Array, perRound: number, rounds = 7): number {
  for (let i = 0; i < Math.max(perRound, 20); i++) checkEncryption(msg);
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < perRound; i++) checkEncryption(msg);
    best = Math.min(best, ((performance.now() - t0) * 1000) / perRound);
  }
  return best;
}

function report(label: string, msg: Uint8Array, perRound: number): void {
  const v = checkEncryption(msg);
  const verdict = v.pass ? `pass ${v.kind}` : `fail: ${v.reason}`;
  console.log(`${label.padEnd(56)} ${String(msg.length).padStart(9)} B ${measure(msg, perRound).toFixed(2).padStart(10)} µs  ${verdict}`);
}

for (const name of sampleNames()) report(name, bytes(sample(name)), 20_000);
report("30 MiB, SEIPD with a five-octet length", bytes(bigMessage(30 << 20)), 3);
report("30 MiB, SEIPD in 64 KiB partial chunks", bytes(bigMessage(30 << 20, true)), 3);
