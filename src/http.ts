// Assembles the HTTP app. Each area builds its own routes; this file only joins them.
import { H3 } from "h3";
import { VERSION } from "./version.ts";
import { SCHEMA_VERSION } from "./db/open.ts";
import { log } from "./log.ts";

export interface HttpDeps {
  startedAt: number;
}

export function createHttpApp(deps: HttpDeps): H3 {
  const app = new H3({
    onError(error) {
      if (error.unhandled) log.withTag("http").error(error.cause ?? error);
    },
  });
  app.get("/healthz", () => ({
    status: "ok",
    version: VERSION,
    schema_version: SCHEMA_VERSION,
    uptime_s: Math.round((Date.now() - deps.startedAt) / 1000),
  }));
  return app;
}
