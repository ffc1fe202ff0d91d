// `madmail pull-client`: fetch the mail an exchanger partner holds for us, for cron.
// Runs until the partner has nothing more (or --max-time), never two at once (lock file),
// prints one summary line. Exit 0 (also when nothing was waiting), 75 temporary, 1 configuration.
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { command } from "./_command.ts";
import { tryLockFile, type HeldLock } from "../util/file-lock.ts";
import { readArgs, repeatedFlag } from "./_args.ts";
import { existingDb } from "./_db.ts";
import { printJson } from "./_output.ts";
import { noStateFile, resolveDbPath } from "../db/open.ts";
import { MadmailError, usageError } from "../errors.ts";
import { setLevel } from "../log.ts";
import { normaliseDomain } from "../util/names.ts";
import { drainPartner, parseBaseUrl, readTokenFile, verifyTlsFor, type DrainResult } from "../exchanger/pull-client.ts";

export default command({
  meta: {
    name: "pull-client",
    description: "Pull the mail an exchanger partner holds for us into the accept pipeline (for cron)",
  },
  details: [
    "Pulls until the partner has nothing more for us (or --max-time), acknowledging each message only once it is stored here. " +
      "A lock file keeps two runs from overlapping: a run that finds it held says so and exits 0.",
    "The summary line counts messages as pulled, and recipients as delivered (stored in a local Maildir), relayed (queued onward), " +
      "refused, deferred (not acknowledged: left with the partner, pulled again on the next run), and duplicates (already " +
      "stored here: the partner offered it again, as after an acknowledgement it lost; acknowledged, not stored twice).",
    "Exit status: 0 when the run went through, also when nothing was waiting; 75 on a temporary failure (partner unreachable " +
      "or answering 5xx, recipients deferred), worth retrying on the next run; 1 on a configuration error (bad URL, token " +
      "file unreadable or empty, token refused, no pull endpoint at the URL, no state file); 2 on bad usage (no token given at all).",
  ],
  args: {
    url: { type: "string", required: true, valueHint: "URL", description: "The partner's base URL (its pull endpoint is URL/exchanger/pull)" },
    "token-file": { type: "string", valueHint: "FILE", description: "File whose first line is our token at the partner (else env MADMAIL_PULL_TOKEN)" },
    once: { type: "boolean", description: "A single pull round instead of pulling until the partner is empty" },
    "max-time": { type: "string", valueHint: "SECONDS", description: "Start no new pull after this many seconds (default 300)" },
    wait: { type: "string", valueHint: "SECONDS", description: "Let the partner hold each pull open up to this long for mail to arrive (0-60, default 0)" },
    lock: { type: "string", valueHint: "FILE", description: "Lock file against overlapping runs (default <data dir>/pull-client.lock)" },
    protocol: { type: "enum", options: ["madmail", "madexchanger"], description: "Pull protocol of the partner (default madmail)" },
    domain: { type: "string", valueHint: "D", description: "madexchanger: domain to pull (repeat or comma list; required there)" },
    ...readArgs,
  },
  examples: [
    "madmail pull-client --url https://hub.example --token-file /etc/madmail/hub.token",
    "madmail pull-client --url https://hub.example --token-file /etc/madmail/hub.token --max-time 50 --quiet  # cron, every minute",
    "MADMAIL_PULL_TOKEN=... madmail pull-client --url https://relay.example --protocol madexchanger --domain a.example,b.example --json",
  ],
  async run({ args, rawArgs }) {
    // Per-message log lines stay out of cron mail; warnings (refused mail) and errors do not.
    if (!process.env.MADMAIL_LOG_LEVEL) setLevel(1);
    const protocol = args.protocol === "madexchanger" ? "madexchanger" : "madmail";
    const domains = checkDomains(repeatedFlag(rawArgs, "--domain"), protocol);
    const maxTime = seconds(args["max-time"], "--max-time", 1, 86_400, 300);
    const wait = seconds(args.wait, "--wait", 0, 60, 0);
    const baseUrl = parseBaseUrl(args.url);
    const token = readToken(args["token-file"]);
    const dbPath = resolveDbPath(args.db);
    // Before the lock file is made beside it: a mistyped path leaves nothing behind.
    if (!existsSync(dbPath)) throw noStateFile(dbPath);
    const lockPath = resolve(args.lock ?? join(dirname(dbPath), "pull-client.lock"));
    if (args.lock === undefined) mkdirSync(dirname(lockPath), { recursive: true });

    // flock(2), dropped by the kernel however a run ends: a run killed by cron's timeout or the
    // OOM killer leaves no lock behind, and a pid in a leftover file means nothing.
    const lock = tryLockFile(lockPath, { removeOnRelease: true }) ?? noLock(lockPath);
    if ("heldBy" in lock) {
      const message = `another pull-client (pid ${lock.heldBy ?? "?"}) holds ${lockPath}; nothing to do`;
      if (args.json) printJson({ ...summaryJson(emptyResult()), locked_by: lock.heldBy });
      else if (!args.quiet) process.stdout.write(message + "\n");
      return;
    }
    const abort = new AbortController();
    const onSignal = () => abort.abort();
    process.once("SIGINT", onSignal).once("SIGTERM", onSignal);
    try {
      const result = await existingDb(args, async (state) => {
        const { openCore } = await import("../server.ts");
        const core = await openCore(state);
        try {
          const { config } = await core.snapshot.get();
          return await drainPartner({
            baseUrl, token, protocol, domains, wait, max: 50, maxTimeMs: maxTime * 1000, maxRounds: args.once ? 1 : undefined,
            core, signal: abort.signal, verifyTls: verifyTlsFor(baseUrl, config["delivery.tls_verify"]),
          });
        } finally {
          await core.writes.drain();
          await core.store.dispose();
        }
      });
      if (args.json) printJson(summaryJson(result));
      else if (!args.quiet) process.stdout.write(summaryLine(result) + "\n");
      if (result.error) throw new MadmailError(result.error.kind, result.error.message);
    } finally {
      process.off("SIGINT", onSignal).off("SIGTERM", onSignal);
      lock.release();
    }
  },
});

function summaryLine(r: DrainResult): string {
  const deferred = r.deferred ? `, deferred ${r.deferred}` : "";
  const duplicates = r.duplicates ? `, duplicates ${r.duplicates}` : "";
  return `pulled ${r.pulled}, delivered ${r.delivered}, relayed ${r.relayed}, refused ${r.refused}${deferred}${duplicates} in ${(r.ms / 1000).toFixed(1)}s`;
}

function summaryJson(r: DrainResult) {
  return {
    pulled: r.pulled, delivered: r.delivered, relayed: r.relayed, refused: r.refused, deferred: r.deferred, duplicates: r.duplicates,
    seconds: Math.round(r.ms) / 1000, error: r.error ?? null,
  };
}

const emptyResult = (): DrainResult => ({ pulled: 0, delivered: 0, duplicates: 0, relayed: 0, refused: 0, deferred: 0, batches: 0, ms: 0, drained: false });

function seconds(input: string | undefined, flag: string, min: number, max: number, dflt: number): number {
  if (input === undefined) return dflt;
  const n = /^\d+$/.test(input.trim()) ? Number(input) : NaN;
  if (!(n >= min && n <= max)) throw usageError(`invalid ${flag} "${input}": expected whole seconds from ${min} to ${max}`);
  return n;
}

function checkDomains(values: string[], protocol: "madmail" | "madexchanger"): string[] {
  const out = new Set<string>();
  for (const item of values.flatMap((v) => v.split(",")).map((s) => s.trim()).filter(Boolean)) {
    const d = normaliseDomain(item);
    if (!d) throw usageError(`invalid domain "${item}" in --domain`);
    out.add(d);
  }
  if (protocol === "madexchanger" && !out.size) throw usageError("--protocol madexchanger needs --domain D (the domains whose mail to pull)");
  if (protocol === "madmail" && out.size) throw usageError("--domain is for --protocol madexchanger; a madmail partner knows what it holds for us");
  return [...out];
}

/** The token file's first line (checked), else MADMAIL_PULL_TOKEN. */
function readToken(file: string | undefined): string {
  if (file !== undefined) return readTokenFile(file);
  const env = process.env.MADMAIL_PULL_TOKEN?.trim();
  if (!env) throw usageError("no token: give --token-file FILE or set MADMAIL_PULL_TOKEN");
  return env;
}

function noLock(path: string): HeldLock {
  process.stderr.write(`madmail: cannot lock ${path} on this system (no flock); overlapping runs are not prevented\n`);
  return { release() {} };
}
