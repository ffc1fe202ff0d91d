import { command } from "./_command.ts";
import type { RunningServer } from "../server.ts";
import { dbArgs, quietArgs } from "./_args.ts";
import { resolveDbPath } from "../db/open.ts";
import { parseListen, type ListenAddress } from "../db/settings.ts";
import { usageError } from "../errors.ts";
import { log, setQuiet } from "../log.ts";

function listenFlag(name: string, value: string | undefined): ListenAddress | null | undefined {
  if (value === undefined) return undefined;
  try {
    return parseListen(value);
  } catch {
    throw usageError(`invalid --${name} "${value}": expected HOST:PORT (e.g. 127.0.0.1:8080) or off`);
  }
}

export default command({
  meta: { name: "serve", description: "Run the server: HTTP /mxdeliv, SMTP (MX), LMTP, submission and the delivery queue" },
  details: [
    "Listeners come from the settings (`madmail config list`) when the server starts; a flag overrides its setting for " +
      "this run only.",
    "One server per state file: a second `serve` on the same file exits 1 (a lock on <state file>-serve.lock).",
    "SIGTERM or SIGINT: stop accepting, let deliveries in flight finish (delivery.shutdown_grace), exit. " +
      "SIGHUP: look at tls.cert and tls.key now, as the server does every minute; a renewed certificate serves new " +
      "connections, a pair that does not load or match is refused and the current one stays (logged).",
  ],
  args: {
    http: { type: "string", valueHint: "ADDR", description: "HTTP listener HOST:PORT or off (setting listen.http)" },
    https: { type: "string", valueHint: "ADDR", description: "HTTPS listener HOST:PORT or off (setting listen.https; needs tls.cert/tls.key)" },
    smtp: { type: "string", valueHint: "ADDR", description: "SMTP MX listener HOST:PORT or off (setting listen.smtp)" },
    lmtp: { type: "string", valueHint: "ADDR", description: "LMTP listener HOST:PORT or off (setting listen.lmtp)" },
    submission: { type: "string", valueHint: "ADDR", description: "Submission (STARTTLS, AUTH) HOST:PORT or off (setting listen.submission)" },
    submissions: { type: "string", valueHint: "ADDR", description: "Submission with implicit TLS HOST:PORT or off (setting listen.submissions)" },
    "log-format": { type: "enum", options: ["human", "json"], description: "Log format on stderr (setting log.format)" },
    ...dbArgs,
    ...quietArgs,
  },
  examples: ["madmail serve", "madmail serve --http 0.0.0.0:8080 --smtp 0.0.0.0:25 --lmtp off", "MADMAIL_DB=/var/lib/madmail/madmail.db madmail serve --log-format json",
    "UV_THREADPOOL_SIZE=32 madmail serve   # threads for file I/O and fsync (default 16, or one per core)",
    "MADMAIL_LOG_LEVEL=4 madmail serve     # debug lines, e.g. each claim pass of the queue"],
  async run({ args }) {
    const listen = {
      http: listenFlag("http", args.http),
      https: listenFlag("https", args.https),
      smtp: listenFlag("smtp", args.smtp),
      lmtp: listenFlag("lmtp", args.lmtp),
      submission: listenFlag("submission", args.submission),
      submissions: listenFlag("submissions", args.submissions),
    };
    setQuiet(!!args.quiet);
    // `systemctl reload` and certificate renewal hooks send HUP, which would otherwise end the
    // process (also while it starts): look at the certificate files now. Settings need no reload.
    let server: RunningServer | null = null;
    process.removeAllListeners("SIGHUP"); // the placeholder of bin/madmail.ts
    process.on("SIGHUP", () => {
      if (!server) return log.info("SIGHUP while starting: the certificate files are read as the listeners start");
      void server.reloadTls().then((r) => log.info(
        r === "none" ? "SIGHUP: no TLS certificate in use, nothing to reload (one set after the start takes a restart)" : `SIGHUP: TLS certificate ${r}`,
      ));
    });
    const { startServer } = await import("../server.ts");
    const running = await startServer({ dbPath: resolveDbPath(args.db), listen, logFormat: args["log-format"] as "human" | "json" | undefined });
    server = running;
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info(`${signal}: shutting down`);
        // A second signal, of either kind, means "now".
        const now = () => process.exit(130);
        process.once("SIGINT", now).once("SIGTERM", now);
        running.stop().finally(resolve);
      };
      const first = (signal: string) => () => {
        process.off("SIGINT", onInt).off("SIGTERM", onTerm);
        stop(signal);
      };
      const onInt = first("SIGINT");
      const onTerm = first("SIGTERM");
      process.once("SIGINT", onInt).once("SIGTERM", onTerm);
    });
  },
});
