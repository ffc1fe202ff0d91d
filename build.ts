// Builds dist/madmail: one self-contained executable (bun build --compile).
// `--if-needed` skips the build when dist/madmail is newer than every source file.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { BunPlugin } from "bun";

const root = import.meta.dir;
const outfile = join(root, "dist", "madmail");

if (process.argv.includes("--if-needed") && existsSync(outfile) && !isStale(outfile)) process.exit(0);

// libsql picks its native addon with a template-string require (`@libsql/${target}`),
// which a bundler cannot follow. Rewrite it to a static require of this platform's
// package so that the .node file is embedded in the executable.
const nativeTarget = `${process.platform}-${process.arch}-${process.platform === "linux" ? "gnu" : ""}`.replace(/-$/, "");
const embedLibsql: BunPlugin = {
  name: "embed-libsql-addon",
  setup(build) {
    build.onLoad({ filter: /[\\/]libsql[\\/]index\.js$/ }, async (args) => {
      const source = await Bun.file(args.path).text();
      const patched = source.replace(
        "return require(`@libsql/${target}`);",
        `return require("@libsql/${nativeTarget}/index.node");`,
      );
      if (patched === source) throw new Error("build: libsql loader changed; update embed-libsql-addon in build.ts");
      return { contents: patched, loader: "js" };
    });
  },
};

const result = await Bun.build({
  // The DKIM signing thread's entry is a second entrypoint: Workers load it from the executable.
  entrypoints: [join(root, "bin", "madmail.ts"), join(root, "src", "delivery", "dkim-worker.ts")],
  compile: { outfile },
  target: "bun",
  format: "esm",
  bytecode: true,
  minify: { syntax: true, whitespace: true },
  sourcemap: "linked",
  plugins: [embedLibsql],
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.error(`built ${outfile} (${(statSync(outfile).size / 1048576).toFixed(1)} MiB)`);

function isStale(target: string): boolean {
  const built = statSync(target).mtimeMs;
  const newer = (dir: string): boolean =>
    readdirSync(dir, { withFileTypes: true }).some((e) => {
      const p = join(dir, e.name);
      return e.isDirectory() ? newer(p) : statSync(p).mtimeMs > built;
    });
  return newer(join(root, "src")) || newer(join(root, "bin")) ||
    ["package.json", "build.ts", "package-lock.json"].some((f) => existsSync(join(root, f)) && statSync(join(root, f)).mtimeMs > built);
}
