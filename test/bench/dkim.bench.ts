// DKIM signing cost per message, the whole signer as the queue runs it (not a test: bun test
// ignores *.bench.ts). No peer: it isolates what relay.bench.ts sees only inside A's CPU.
//
//   ./node_modules/.bin/bun test/bench/dkim.bench.ts [--messages 3000]
//
// A fresh RSA-2048 key made by createDkimKey (what `madmail dkim generate` runs) in a temp dir;
// the signer of src/delivery/dkim.ts (mailauth's canonicalisation and header format, the RSA
// operation by the system's OpenSSL when libcrypto.so.3 loads, else WebCrypto) signs, one at a
// time on this thread, a Delta Chat-like PGP/MIME message of about 1.5 KB and 4.6 KB with CRLF
// and with LF line ends (Delta Chat stores LF). Prints CPU ms per signature (user + system).
// Then the same 1.5 KB CRLF message through the signing thread that serve uses
// (src/delivery/dkim-thread.ts), 8 signatures in flight, and in bursts of 32 asked for in one
// turn: CPU per signature of the whole process and of its main thread alone
// (/proc/self/task/PID/stat), i.e. what handing a message to the thread and taking the header
// back costs the event loop.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createDkimKey, loadDkimSigner } from "../../src/delivery/dkim.ts";
import { startDkimThread } from "../../src/delivery/dkim-thread.ts";
import { dieWith, procOwnCpu, requirePositiveIntegers } from "./_lib.ts";

const { values } = parseArgs({ options: { messages: { type: "string", default: "3000" } } });
const N = Number(values.messages);
requirePositiveIntegers({ messages: N }, dieWith("dkim.bench"));

function message(bodyBytes: number, eol: string): Buffer {
  const head = [
    "From: alice@a.test", "To: bob@b.test", "Subject: [...]", "Date: Sat, 21 Nov 2026 10:00:00 +0000", "Message-ID: <bench@a.test>",
    "MIME-Version: 1.0", "Chat-Version: 1.0", `Autocrypt: addr=alice@a.test; prefer-encrypt=mutual; keydata=${"Q".repeat(200)}`,
    'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"',
  ];
  const lines = Array.from({ length: Math.ceil(bodyBytes / 78) }, () => "A".repeat(76));
  return Buffer.from([...head, "", "--b", ...lines, "--b--", ""].join(eol));
}

const dir = mkdtempSync(join(tmpdir(), "madmail-dkim-bench-"));
try {
  await createDkimKey(dir, "a.test", { selector: "bench" });
  const signer = loadDkimSigner(dir, { announce: false });
  const rows: string[] = [];
  for (const size of [1024, 4096]) {
    for (const eol of ["\r\n", "\n"]) {
      const m = message(size, eol);
      for (let i = 0; i < 100; i++) await signer.signatureFor(m, "a.test"); // warm-up
      const c0 = process.cpuUsage();
      for (let i = 0; i < N; i++) {
        if ((await signer.signatureFor(m, "a.test")) === null) throw new Error("no signature: the key did not load");
      }
      const c = process.cpuUsage(c0);
      rows.push(`| ${m.length} | ${eol === "\n" ? "LF" : "CRLF"} | ${((c.user + c.system) / 1000 / N).toFixed(3)} |`);
      console.log(rows.at(-1));
    }
  }
  // Through the thread.
  const thread = startDkimThread(dir, { logFormat: "human", level: 1 });
  // The main thread is the task whose id is the process id.
  const mainThreadCpuMs = () => {
    const { user, sys } = procOwnCpu(process.pid, process.pid);
    return (user + sys) * 1000;
  };
  const m = message(1024, "\r\n");
  const viaThread = async (n: number) => {
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next++ < n) await thread.sign(m, "a.test");
    }));
  };
  // Bursts: 32 asked for in the same turn, the next burst when all are back (the queue starts
  // its deliveries in bursts: one claim pass takes several rows).
  const inBursts = async (n: number) => {
    for (let done = 0; done < n; done += 32) await Promise.all(Array.from({ length: Math.min(32, n - done) }, () => thread.sign(m, "a.test")));
  };
  await viaThread(300); // warm-up, and the thread's own key load
  for (const [label, run] of [["8 in flight", viaThread], ["bursts of 32 asked in one turn", inBursts]] as const) {
    const c0 = process.cpuUsage();
    const main0 = mainThreadCpuMs();
    await run(N);
    const c = process.cpuUsage(c0);
    const threadRow = `| ${m.length} | CRLF, through the signing thread, ${label} | ${((c.user + c.system) / 1000 / N).toFixed(3)} (main thread ${((mainThreadCpuMs() - main0) / N).toFixed(3)}) |`;
    rows.push(threadRow);
    console.log(threadRow);
  }
  thread.close();
  console.log(`\nCommand: \`./node_modules/.bin/bun test/bench/dkim.bench.ts ${process.argv.slice(2).join(" ")}\` (${N} signatures per row, ${new Date().toISOString()})\n`);
  console.log("| message bytes | line ends | CPU ms per signature |\n| ---: | --- | ---: |\n" + rows.join("\n"));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
