// The one logger. Logs go to stderr so that stdout stays data (tables, --json).
import { createConsola, type ConsolaInstance, type LogObject } from "consola";

export type LogFormat = "human" | "json";

const jsonReporter = {
  log(entry: LogObject) {
    const [first, ...rest] = entry.args;
    const line: Record<string, unknown> = { time: entry.date.toISOString(), level: entry.type, tag: entry.tag || undefined };
    line.msg = typeof first === "string" ? first : JSON.stringify(first);
    if (rest.length === 1 && rest[0] && typeof rest[0] === "object") Object.assign(line, rest[0]);
    else if (rest.length) line.args = rest;
    process.stderr.write(JSON.stringify(line) + "\n");
  },
};

export const log: ConsolaInstance = createConsola({
  level: process.env.MADMAIL_LOG_LEVEL ? Number(process.env.MADMAIL_LOG_LEVEL) : 3,
  stdout: process.stderr,
  stderr: process.stderr,
  formatOptions: { date: true, colors: !process.env.NO_COLOR },
});

export function setLogFormat(format: LogFormat): void {
  if (format === "json") log.setReporters([jsonReporter]);
}

export function setQuiet(quiet: boolean): void {
  if (quiet) log.level = 1; // errors and warnings only
}
