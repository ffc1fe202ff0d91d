// Micro-benchmark of durable Maildir delivery (not a test: bun test ignores *.bench.ts).
//
//   ./node_modules/.bin/bun test/bench/maildir.bench.ts [--messages 10000] [--size 4096]
//       [--concurrency 32] [--rounds 2] [--dir /path/on/the/disk/to/measure]
//
// Delivers N messages of SIZE bytes from C concurrent callers, to one address and spread over
// 100 addresses, with the mailbox store (file fsyncs run concurrently, new/ fsync shared by
// group commit) and with a naive delivery doing the same steps but its own fsync of new/ per
// message. Both are durable; both use the same concurrency; same run, same disk, alternating.
import { constants, mkdtempSync, promises as fsp, rmSync } from "node:fs";
import { hostname, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createMaildirStore } from "../../src/store/mailbox-store.ts";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "10000" },
    size: { type: "string", default: "4096" },
    concurrency: { type: "string", default: "32" },
    rounds: { type: "string", default: "3" },
    dir: { type: "string", default: tmpdir() },
  },
});
const N = Number(values.messages);
const SIZE = Number(values.size);
const C = Number(values.concurrency);
const ROUNDS = Number(values.rounds);

type Deliver = (address: string, body: Uint8Array) => Promise<unknown>;
interface Subject {
  name: string;
  open(root: string): { deliver: Deliver; close(): Promise<void> };
}

const grouped: Subject = {
  name: "mailbox store (group commit)",
  open(root) {
    const store = createMaildirStore({ root });
    return { deliver: (a, b) => store.deliver(a, b), close: () => store.dispose() };
  },
};

// The same durable steps, without sharing: write tmp/, fsync, rename to new/, fsync new/.
const naive: Subject = {
  name: "naive (fsync file + fsync dir per message)",
  open(root) {
    let q = 0;
    const made = new Set<string>();
    return {
      async deliver(address, body) {
        const dir = join(root, address);
        if (!made.has(address)) {
          for (const s of ["tmp", "new", "cur"]) await fsp.mkdir(join(dir, s), { recursive: true, mode: 0o700 });
          made.add(address);
        }
        const name = `${Math.floor(Date.now() / 1000)}.M${Math.floor(performance.now() * 1000) % 1e6}P${process.pid}Q${++q}.${hostname()},S=${body.byteLength}`;
        const tmp = join(dir, "tmp", name);
        const h = await fsp.open(tmp, "wx", 0o600);
        await h.write(body, 0, body.byteLength, 0);
        await h.sync();
        await h.close();
        await fsp.rename(tmp, join(dir, "new", name));
        const d = await fsp.open(join(dir, "new"), constants.O_RDONLY | constants.O_DIRECTORY);
        await d.sync();
        await d.close();
      },
      close: async () => {},
    };
  },
};

// Runs write into one scratch directory, removed only at the end: deleting 10,000 files
// between runs would make ext4 scan for recently deleted inodes during the next run's creates
// and penalise whichever subject comes second.
const scratch = mkdtempSync(join(values.dir!, "madmail-bench-"));
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }));
let runs = 0;

async function run(subject: Subject, addresses: number): Promise<number> {
  const root = join(scratch, String(++runs));
  const target = subject.open(root);
  const body = new Uint8Array(SIZE).fill(0x61);
  const rcpt = (i: number) => `user${i % addresses}@bench.example`;
  // Warm-up: one delivery per address creates the Maildirs outside the timed part.
  await Promise.all(Array.from({ length: addresses }, (_, i) => target.deliver(rcpt(i), body)));
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: C }, async () => {
      for (let i = next++; i < N; i = next++) await target.deliver(rcpt(i), body);
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await target.close();
  return N / seconds;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => x.toFixed(0).padStart(6);

console.log(`# ${N} messages of ${SIZE} B, ${C} concurrent callers, ${ROUNDS} rounds (alternating order), dir ${values.dir}`);
console.log(`# load average at start: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
for (const addresses of [1, 100]) {
  const rates = new Map<Subject, number[]>([
    [grouped, []],
    [naive, []],
  ]);
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of r % 2 ? [naive, grouped] : [grouped, naive]) rates.get(s)!.push(await run(s, addresses));
  }
  for (const [s, list] of rates) {
    console.log(`${String(addresses).padStart(3)} address(es)  ${s.name.padEnd(44)} ${list.map(fmt).join(" ")} msg/s  median ${fmt(median(list))}`);
  }
  const ratio = median(rates.get(grouped)!) / median(rates.get(naive)!);
  console.log(`${String(addresses).padStart(3)} address(es)  ratio group commit / naive (medians): ${ratio.toFixed(2)}x`);
}
