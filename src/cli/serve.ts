import { command } from "./_command.ts";
import { dbArgs, quietArgs } from "./_args.ts";
import { resolveDbPath } from "../db/open.ts";
import { parseListen, type ListenAddress } from "../db/settings.ts";
import { usageError } from "../errors.ts";
import { log, setLogFormat, setQuiet } from "../log.ts";

function listenFlag(name: string, value: string | undefined): ListenAddress | null | undefined {
  if (value === undefined) return undefined;
  try {
    return parseListen(value);
  } catch {
    throw usageError(`invalid --${name} "${value}": expected HOST:PORT (e.g. 127.0.0.1:8080) or off`);
  }
}

export default command({
  meta: { name: "serve", description: "Run the server: HTTP /mxdeliv and /healthz (listeners from settings; flags override for this run)" },
  args: {
    http: { type: "string", valueHint: "ADDR", description: "HTTP listener HOST:PORT or off (setting listen.http)" },
    "log-format": { type: "enum", options: ["human", "json"], description: "Log format on stderr (setting log.format)" },
    ...dbArgs,
    ...quietArgs,
  },
  examples: ["madmail serve", "madmail serve --http 0.0.0.0:8080", "MADMAIL_DB=/var/lib/madmail/madmail.db madmail serve --log-format json"],
  async run({ args }) {
    const http = listenFlag("http", args.http);
    if (args["log-format"]) setLogFormat(args["log-format"]);
    setQuiet(!!args.quiet);
    const { startServer } = await import("../server.ts");
    const server = await startServer({ dbPath: resolveDbPath(args.db), http });
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info(`${signal}: shutting down`);
        // A second signal means "now".
        process.once(signal as NodeJS.Signals, () => process.exit(130));
        server.stop().finally(resolve);
      };
      process.once("SIGINT", () => stop("SIGINT"));
      process.once("SIGTERM", () => stop("SIGTERM"));
    });
  },
});
