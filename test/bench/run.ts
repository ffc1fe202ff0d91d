// Runs every benchmark (test/bench/*.bench.ts) one after the other, each in its own bun process
// with the terminal's stdio; used by `npm run bench` (which builds dist/madmail first if needed).
//
//   ./node_modules/.bin/bun test/bench/run.ts
//
// Exits non-zero if any benchmark did; the others still run.
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";

const dir = import.meta.dir;
const root = join(dir, "../..");
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".bench.ts"))
  .sort();
if (!files.length) {
  console.error(`no *.bench.ts in ${dir}`);
  process.exit(1);
}

const failed: string[] = [];
for (const f of files) {
  const path = relative(root, join(dir, f));
  console.log(`\n=== ${path} ===`);
  const t0 = performance.now();
  const proc = Bun.spawn([process.execPath, path], { cwd: root, stdin: "inherit", stdout: "inherit", stderr: "inherit" });
  const code = await proc.exited;
  console.log(`=== ${path}: exit ${code} after ${((performance.now() - t0) / 1000).toFixed(1)} s ===`);
  if (code !== 0) failed.push(`${path} (exit ${code})`);
}
if (failed.length) {
  console.error(`\nfailed: ${failed.join(", ")}`);
  process.exit(1);
}
