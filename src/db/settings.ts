// The one typed registry of settings. `madmail config`, `serve` and later the admin API all
// read it. Values are stored as text in the settings table in their normalised form; a
// stored value that no longer parses is logged and replaced by its default.
import { isIP } from "node:net";
import { join } from "node:path";
import { hostname } from "node:os";
import { log } from "../log.ts";
import { formatDuration, formatSize, parseDuration, parseSize } from "../util/units.ts";
import { usageError } from "../errors.ts";
import { hostForUrl, normaliseAddress, normaliseDomain, normaliseHost } from "../util/names.ts";
import type { Db } from "./open.ts";

export interface SettingDef<T> {
  /** Short type name shown by `config list` and errors. */
  type: string;
  /** Text form of the default (what `config list` prints). */
  default: string;
  description: string;
  /** The accepted forms, shown when a value is refused. */
  expected: string;
  /** A secret (a password): `config list`/`get` show only whether it is set. */
  secret?: boolean;
  /** Read by `madmail serve` when it starts only (listeners, where mail is stored): a change takes a restart. */
  atStart?: boolean;
  /** Parses stored/user text; throws a plain Error whose message says what is wrong. */
  parse(text: string): T;
  /** Normalised text to store. */
  normalise(text: string): string;
}

export interface ListenAddress {
  host: string;
  port: number;
}

function def<T>(d: Omit<SettingDef<T>, "normalise"> & { normalise?: (text: string) => string }): SettingDef<T> {
  return { normalise: (t) => t.trim(), ...d };
}

const listen = (dflt: string, description: string) =>
  def<ListenAddress | null>({
    type: "listen",
    default: dflt,
    description,
    expected: "HOST:PORT (e.g. 127.0.0.1:8080, [::1]:25, 0.0.0.0:25) or off",
    parse: parseListen,
    normalise: (t) => formatListen(parseListen(t)),
    atStart: true,
  });

const size = (dflt: string, description: string) =>
  def<number>({
    type: "size",
    default: dflt,
    description,
    expected: "a size in bytes with an optional K, M, G or T suffix (e.g. 500M, 1G)",
    parse: (t) => {
      const n = parseSize(t);
      if (n === null || n <= 0) throw new Error("not a positive size");
      return n;
    },
    normalise: (t) => formatSize(parseSize(t)!),
  });

/** 100 years, in seconds: more is not a duration anyone means. */
const MAX_DURATION = 100 * 365 * 86_400;

const duration = (dflt: string, description: string, min = 0) =>
  def<number>({
    type: "duration",
    default: dflt,
    description,
    expected: `a duration in seconds with an optional s, m, h, d or w suffix (e.g. 90s, 10m, 7d)${min ? `, at least ${min}s` : ""}, at most ${formatDuration(MAX_DURATION)}`,
    parse: (t) => {
      const n = parseDuration(t);
      if (n === null) throw new Error("not a valid duration");
      // Times are milliseconds since 1970 in the state file: a century keeps them valid dates.
      if (n < min || n > MAX_DURATION) throw new Error("out of range");
      return n;
    },
    normalise: (t) => formatDuration(parseDuration(t)!),
  });

const text = (dflt: string, description: string, expected = "any text") =>
  def<string>({ type: "string", default: dflt, description, expected, parse: (t) => t });

const path = (description: string) =>
  def<string>({ type: "path", default: "", description, expected: "an absolute file system path, or empty for the default", parse: (t) => {
    if (t !== "" && !t.startsWith("/")) throw new Error("not an absolute path");
    return t;
  } });

const optionalId = (description: string) =>
  def<number | null>({ type: "int", default: "", description, expected: "a numeric id from 0 to 4294967294, or empty", parse: (t) => {
    if (t === "") return null;
    if (!/^\d+$/.test(t) || Number(t) > 4294967294) throw new Error("not a numeric id");
    return Number(t);
  } });

const choice = <const O extends readonly string[]>(options: O, dflt: O[number], description: string) =>
  def<O[number]>({
    type: "enum",
    default: dflt,
    description,
    expected: `one of ${options.join(", ")}`,
    parse: (t) => {
      if (!options.includes(t.toLowerCase())) throw new Error("not one of the choices");
      return t.toLowerCase() as O[number];
    },
    normalise: (t) => t.trim().toLowerCase(),
  });

const integer = (dflt: number, min: number, max: number, description: string) =>
  def<number>({
    type: "int",
    default: String(dflt),
    description,
    expected: `a whole number from ${min} to ${max}`,
    parse: (t) => {
      if (!/^\d+$/.test(t.trim())) throw new Error("not a whole number");
      const n = Number(t);
      if (!(n >= min && n <= max)) throw new Error("out of range");
      return n;
    },
    normalise: (t) => String(Number(t)),
  });

const durationList = (dflt: string, description: string) =>
  def<number[]>({
    type: "durations",
    default: dflt,
    description,
    expected: "a comma-separated list of durations (e.g. 1m,5m,15m,30m,1h,2h); the last one repeats",
    parse: (t) => {
      const items = t.split(",").map((x) => parseDuration(x));
      if (!items.length || items.some((n) => n === null || n <= 0 || n > MAX_DURATION)) throw new Error("not a list of positive durations");
      return items as number[];
    },
    normalise: (t) => t.split(",").map((x) => formatDuration(parseDuration(x)!)).join(","),
  });

/** host:port of an MTA, or empty for none. */
const hostPort = (description: string, defaultPort: number) =>
  def<{ host: string; port: number } | null>({
    type: "hostport",
    default: "",
    description,
    expected: `HOST[:PORT] (port ${defaultPort} if omitted), [IPv6]:PORT, or empty (or off) for none`,
    parse: (t) => {
      // "off" as for the listeners: not a host of that name.
      if (t.trim() === "" || t.trim().toLowerCase() === "off") return null;
      const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+))(?::(\d{1,5}))?$/i.exec(t.trim());
      const host = m ? normaliseHost(m[1] ?? m[2]!) : null;
      const port = m?.[3] ? Number(m[3]) : defaultPort;
      if (!host || !(port >= 1 && port <= 65535)) throw new Error("not HOST[:PORT]");
      return { host, port };
    },
    normalise: (t) => t.trim().toLowerCase(),
  });

const domainList = (description: string) =>
  def<string[]>({
    type: "list",
    default: "",
    description,
    expected: "a comma-separated list of domains (a.example,b.example)",
    parse: (t) => {
      const items = t.split(",").map((s) => s.trim()).filter(Boolean);
      const out = items.map((d) => normaliseDomain(d));
      const bad = items.find((_, i) => !out[i]);
      if (bad !== undefined) throw new Error(`"${bad}" is not a domain`);
      return out as string[];
    },
    normalise: (t) => t.split(",").map((s) => normaliseDomain(s.trim()) ?? s.trim()).filter(Boolean).join(","),
  });

/** Each item spelled as the gate compares it: normalised address, or @ and normalised domain. */
function parseAddressList(t: string): string[] {
  return t.split(",").map((s) => s.trim()).filter(Boolean).map((item) => {
    const n = item.startsWith("@") ? normaliseHost(item.slice(1)) : normaliseAddress(item);
    if (!n) throw new Error(`"${item}" is neither user@domain nor @domain`);
    return item.startsWith("@") ? `@${n}` : n;
  });
}

const addressList = (description: string) =>
  def<string[]>({
    type: "list",
    default: "",
    description,
    expected: "a comma-separated list of addresses (user@example.org) or domains (@example.org)",
    parse: parseAddressList,
    normalise: (t) => parseAddressList(t).join(","),
  });

export const settingsRegistry = {
  "hostname": def<string>({
    type: "string",
    default: normaliseDomain(hostname()) ?? "localhost",
    description: "Name this server gives in SMTP greetings (EHLO, banner) and bounce reports",
    expected: "a host name such as mx.example.org",
    parse: (t) => {
      const d = normaliseDomain(t);
      if (!d) throw new Error("not a host name");
      return d;
    },
    normalise: (t) => normaliseDomain(t) ?? t,
  }),
  "listen.http": listen("127.0.0.1:8080", "HTTP listener: POST /mxdeliv, /healthz, the exchanger pull endpoint"),
  "listen.https": listen("off", "HTTPS listener (needs tls.cert and tls.key): the same routes as listen.http, port 443 in production"),
  "listen.smtp": listen("127.0.0.1:2525", "SMTP MX listener for other servers (port 25 in production)"),
  "listen.submission": listen("127.0.0.1:2587", "SMTP submission for local users (STARTTLS when a certificate is set)"),
  "listen.submissions": listen("off", "SMTP submission with implicit TLS (port 465 in production)"),
  "listen.lmtp": listen("127.0.0.1:8024", "LMTP listener for an MTA in front (Postfix, Exim)"),
  "tls.cert": path("PEM certificate chain for STARTTLS and implicit TLS"),
  "tls.key": path("PEM private key matching tls.cert"),
  "limits.max_message_size": size("30M", "Largest message accepted on any door"),
  "quota.default": size("1G", "Mailbox quota for users added without --quota"),
  "mail_root": { ...path("Root of the Maildirs (<mail_root>/<address>/{tmp,new,cur}); empty = <data dir>/mail"), atStart: true },
  "mail.uid": { ...optionalId("Owner uid of delivered Maildir files (Dovecot refuses root); empty = the server's own"), atStart: true },
  "mail.gid": { ...optionalId("Owner gid of delivered Maildir files; empty = the server's own"), atStart: true },
  "federation.policy": choice(["accept", "reject"] as const, "accept", "accept: federation rules are a blocklist; reject: they are an allowlist"),
  "gate.passthrough_senders": addressList("Senders whose mail skips the encryption gate"),
  "gate.passthrough_recipients": addressList("Recipients whose mail skips the encryption gate"),
  "mxdeliv.dedup_window": duration("7d", "How long X-Madmail-Delivery-Id values are remembered", 60),
  "queue.retry_schedule": durationList("1m,5m,15m,30m,1h,2h", "Waits between delivery attempts (with ±10% jitter); the last one repeats"),
  "queue.lifetime": duration("5d", "How long a message is retried before it is given up (dead letter + bounce)", 60),
  "queue.concurrency": integer(64, 1, 1000, "Deliveries in flight at once, in total"),
  "queue.per_destination": integer(20, 1, 100, "Deliveries in flight at once to one destination domain (Postfix: 20)"),
  "queue.lease": duration("10m", "How long a claimed delivery stays claimed; after a crash it is retried when this runs out", 30),
  "queue.keep_delivered": duration("1d", "How long delivered queue entries stay visible (queue list --state delivered)", 0),
  "delivery.timeout": duration("60s", "Time limit of one delivery attempt to one endpoint", 1),
  "delivery.shutdown_grace": duration("15s", "On SIGTERM, how long in-flight deliveries may finish", 0),
  "delivery.tls_verify": choice(["auto", "always", "never"] as const, "auto", "Check TLS certificates of peers: auto = for host names, not for IP literals"),
  "delivery.reprobe_after": duration("1h", "After this long, a domain's learned endpoint is re-probed from the top of the list", 60),
  "relay.smarthost": hostPort("Send all remote mail to this MTA over SMTP (like Postfix relayhost)", 25),
  "relay.smarthost_tls": choice(["starttls", "tls", "none"] as const, "starttls", "Smarthost connection: starttls (required), tls (implicit, port 465) or none"),
  "relay.smarthost_user": text("", "Smarthost AUTH user name (empty: no AUTH)"),
  // Byte for byte: spaces at either end are part of a password.
  "relay.smarthost_password": { ...text("", "Smarthost AUTH password (shown as ******** by config list/get)"), secret: true, normalise: (t: string) => t },
  "delivery.reroute_after": duration("10m", "Mail still deferred this long moves to the fallback exchanger (0 = never)", 0),
  "relay.domains": domainList("Recipient domains this server accepts on /mxdeliv and SMTP to pass on (as an exchanger relaying for others)"),
  "exchanger.pull_lease": duration("5m", "How long pulled messages stay handed out before they are offered again unless acknowledged", 10),
  "log.format": { ...choice(["human", "json"] as const, "human", "Log format of serve (human or json lines on stderr)"), atStart: true },
} as const;

export type SettingKey = keyof typeof settingsRegistry;
export type SettingValue<K extends SettingKey> = ReturnType<(typeof settingsRegistry)[K]["parse"]>;
export type Config = { readonly [K in SettingKey]: SettingValue<K> };

export function isSettingKey(key: string): key is SettingKey {
  return Object.hasOwn(settingsRegistry, key);
}

/** Validates KEY and VALUE as typed by a user; throws a usage error naming the key and the form. */
export function checkSetting(key: string, value: string): { key: SettingKey; stored: string } {
  if (!isSettingKey(key)) {
    throw usageError(`unknown setting "${key}"; run \`madmail config list\` to see every key`);
  }
  const d = settingsRegistry[key] as SettingDef<unknown>;
  try {
    d.parse(d.secret ? value : value.trim());
  } catch (err) {
    throw usageError(`invalid value "${value}" for ${key}: ${(err as Error).message}; expected ${d.expected}`);
  }
  return { key, stored: d.normalise(value) };
}

export async function readStoredSettings(db: Db): Promise<Map<string, string>> {
  const rows = await db.selectFrom("settings").select(["key", "value"]).execute();
  return new Map(rows.map((r) => [r.key, r.value]));
}

/** The resolved, frozen configuration. A bad stored value is logged and its default used. */
export async function loadConfig(db: Db): Promise<Config> {
  const stored = await readStoredSettings(db);
  const out: Record<string, unknown> = {};
  for (const [key, d] of Object.entries(settingsRegistry) as [SettingKey, SettingDef<unknown>][]) {
    const text = stored.get(key);
    if (text !== undefined) {
      try {
        out[key] = d.parse(text);
        continue;
      } catch (err) {
        log.warn(`setting ${key}: stored value "${text}" is invalid (${(err as Error).message}); using default "${d.default}"`);
      }
    }
    out[key] = d.parse(d.default);
  }
  return Object.freeze(out) as Config;
}

export function parseListen(text: string): ListenAddress | null {
  const t = text.trim().toLowerCase();
  if (t === "off") return null;
  const m = /^(?:\[([^\]]*)\]|([^:[\]]+)):(\d{1,5})$/.exec(t);
  if (!m) throw new Error("not HOST:PORT or off");
  // Port 0 would be a port the kernel picks, which no peer or MTA could be told.
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new Error(`port ${m[3]} is not between 1 and 65535`);
  if (m[1] !== undefined) {
    if (isIP(m[1]) !== 6) throw new Error(`[${m[1]}] is not an IPv6 address`);
    return { host: m[1], port };
  }
  const name = m[2]!;
  if (name === "*") return { host: "0.0.0.0", port };
  if (/^[\d.]+$/.test(name)) {
    if (isIP(name) !== 4) throw new Error(`${name} is not an IPv4 address`);
    return { host: name, port };
  }
  const host = normaliseDomain(name);
  if (!host) throw new Error(`${name} is not a host name or IP address`);
  return { host, port };
}

/** The canonical text of a listen address: `host:port`, `[v6]:port` or `off`. */
function formatListen(a: ListenAddress | null): string {
  return a ? `${hostForUrl(a.host)}:${a.port}` : "off";
}

/** The directory holding one Maildir per address (setting mail_root, else <data dir>/mail). */
export function mailRootOf(config: Config, dataDir: string): string {
  return config.mail_root || join(dataDir, "mail");
}
