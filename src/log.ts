// The one logger. Logs go to stderr so that stdout stays data (tables, --json).
import { createConsola, type ConsolaInstance, type LogObject } from "consola";

export type LogFormat = "human" | "json";

const jsonReporter = {
  log(entry: LogObject) {
    const [first, ...rest] = entry.args;
    const line: Record<string, unknown> = { time: entry.date.toISOString(), level: entry.type, tag: entry.tag || undefined };
    line.msg = typeof first === "string" ? first : first instanceof Error ? errorText(first) : JSON.stringify(first);
    if (first instanceof Error && first.stack) line.stack = stackFrames(first).join("\n");
    if (rest.length === 1 && rest[0] && typeof rest[0] === "object") Object.assign(line, rest[0]);
    else if (rest.length) line.args = rest;
    process.stderr.write(JSON.stringify(line) + "\n");
  },
};

// consola's fancy reporter measures string widths and formats locale times: too slow for a
// line per message at thousands of messages per second. This one writes plain lines.
const humanReporter = {
  log(entry: LogObject) {
    const text = entry.args.map((a) => (typeof a === "string" ? a : a instanceof Error ? [errorText(a), ...stackFrames(a)].join("\n") : JSON.stringify(a))).join(" ");
    const level = entry.type === "log" || entry.type === "info" || entry.type === "success" ? "" : `${entry.type.toUpperCase()} `;
    process.stderr.write(`${entry.date.toISOString()} ${level}${entry.tag ? `[${entry.tag}] ` : ""}${text}\n`);
  },
};

export const log: ConsolaInstance = createConsola({
  level: process.env.MADMAIL_LOG_LEVEL ? Number(process.env.MADMAIL_LOG_LEVEL) : 3,
  reporters: [humanReporter],
});

// consola's withTag builds a new instance (an options merge) on every call, and the hot paths
// log a tagged line per message: keep one per tag. A tagged instance copies the level and
// reporters when it is made, so changing either goes through setLevel/setLogFormat, which
// drop the copies.
const tagged = new Map<string, ConsolaInstance>();
const makeTagged = log.withTag.bind(log);
log.withTag = (tag: string) => {
  let child = tagged.get(tag);
  if (!child) tagged.set(tag, (child = makeTagged(tag)));
  return child;
};

export function setLogFormat(format: LogFormat): void {
  log.setReporters([format === "json" ? jsonReporter : humanReporter]);
  tagged.clear();
}

export function setLevel(level: number): void {
  log.level = level;
  tagged.clear();
}

export function setQuiet(quiet: boolean): void {
  if (quiet) setLevel(1); // errors and warnings only
}

/**
 * One line for an error: its code and message. Not the stack's first line: libsql sets the
 * message after making the error, so its stack begins with a bare "Error".
 */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const message = err.message || err.name;
  return typeof code === "string" && !message.includes(code) ? `${code}: ${message}` : message;
}

function stackFrames(err: Error): string[] {
  return (err.stack ?? "").split("\n").filter((l) => /^\s+at /.test(l));
}
