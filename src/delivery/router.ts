// The ONE place that decides where mail for a recipient domain goes (DESIGN.md §5), first
// match wins: outbound policy; endpoint rewrite (exact key, then the longest *. wildcard);
// an enabled exchanger serving the domain; the smarthost; direct delivery (learned endpoint
// first, then MX hosts: https://mx, https://domain, http://mx, smtp mx:25).
import { isIP } from "node:net";
import type { Db } from "../db/open.ts";
import type { Config } from "../db/settings.ts";
import type { DnsOverrideRow, ExchangerRow } from "../db/schema.ts";
import { federationVerdict, type FederationRules } from "../policy/federation.ts";
import { log } from "../log.ts";
import { hostForUrl } from "../util/names.ts";
import { matchOverride, parseTarget } from "./endpoint-overrides.ts";
import { findLearnedEndpoint } from "./endpoint-cache.ts";
import { resolveMxHosts, type MxResult } from "./mx.ts";

export type Candidate =
  /** `bearer`: our token at an exchanger partner, so that it passes our mail on. */
  | { transport: "https" | "http"; url: string; verifyTls: boolean; bearer?: string }
  | { transport: "smtp"; host: string; port: number; tls: "required" | "opportunistic" | "implicit" | "none"; verifyTls: boolean; auth?: { user: string; pass: string } };

export type Route =
  | { kind: "reject"; reason: string }
  | { kind: "dismiss"; reason: string }
  /** Held for a pull exchanger (or an exchanger the router cannot use yet). */
  | { kind: "hold"; exchanger: string; reason: string; reroutedTo?: string }
  | {
    kind: "try"; via: "rewrite" | "exchanger" | "smarthost" | "direct"; candidates: Candidate[]; reroutedTo?: string;
    /** Record the candidate that takes the message in endpoint_cache. */
    learn: boolean;
    /** The learned endpoint (candidateKey) put first: its success again is not news, so its age stays. */
    learned?: string;
  }
  | { kind: "permanent"; reason: string }
  | { kind: "temporary"; reason: string };

export interface RouterContext {
  db: Db;
  config: Config;
  rules: FederationRules;
  localDomains: ReadonlySet<string>;
  exchangers: readonly ExchangerRow[];
  /** Endpoint rewrites by lookup key (the snapshot's). */
  overrides: ReadonlyMap<string, DnsOverrideRow>;
  resolveMx?: (domain: string) => Promise<MxResult>;
  now?: number;
  /** The queue row being routed: for delayed reroute to the fallback exchanger. */
  delivery?: { created_at: number; tries: number; rerouted_to: string | null; route: string | null };
}

export async function routeDomain(domain: string, ctx: RouterContext): Promise<Route> {
  const policy = federationVerdict(ctx.rules, domain, (d) => ctx.localDomains.has(d));
  if (policy === "reject") return { kind: "reject", reason: `${domain} is refused by the federation policy` };
  if (policy === "dismiss") return { kind: "dismiss", reason: `${domain} is on the dismiss list` };

  // Delayed reroute (Momentum's XFER): mail that keeps failing for delivery.reroute_after goes
  // to the enabled fallback exchanger, and stays with it once moved.
  const rerouted = reroute(ctx);
  if (rerouted) {
    const r = exchangerRoute(rerouted, rerouted.name, ctx);
    if (r.kind === "try" || r.kind === "hold") return { ...r, reroutedTo: rerouted.name };
  }

  // Mail held for a pull exchanger that is disabled now (maintenance) stays held for it, with
  // its route: routed afresh it would go to the domain directly, which the puller exists for
  // because that fails, and bounce. (Delayed reroute above may still move it to the fallback.)
  const heldFor = ctx.delivery?.route?.startsWith("exchanger:")
    ? ctx.exchangers.find((e) => `exchanger:${e.name}` === ctx.delivery!.route && e.mode === "pull")
    : undefined;
  if (heldFor && heldFor.enabled !== 1) {
    return { kind: "hold", exchanger: heldFor.name, reason: `held for exchanger "${heldFor.name}", which is disabled: waits until it is enabled again` };
  }

  const override = matchOverride(ctx.overrides, domain);
  if (override) {
    const target = parseTarget(override.target_host);
    if (target.kind === "exchanger") return exchangerRoute(ctx.exchangers.find((e) => e.name === target.name), target.name, ctx);
    if (target.kind === "url") return { kind: "try", via: "rewrite", candidates: [urlCandidate(target.url, ctx.config)], learn: false };
    return { kind: "try", via: "rewrite", candidates: hostCandidates(target.host, target.port, domain, ctx.config), learn: false };
  }

  const serving = ctx.exchangers.find((e) => e.enabled === 1 && e.fallback === 0 && servesDomain(e, domain));
  if (serving) return exchangerRoute(serving, serving.name, ctx);

  const smarthost = ctx.config["relay.smarthost"];
  if (smarthost) {
    const tlsMode = ctx.config["relay.smarthost_tls"];
    const user = ctx.config["relay.smarthost_user"];
    if (user && tlsMode === "none") warnPlainPassword(smarthost.host, smarthost.port);
    return {
      kind: "try",
      via: "smarthost",
      learn: false,
      candidates: [{
        transport: "smtp", host: smarthost.host, port: smarthost.port,
        tls: tlsMode === "tls" ? "implicit" : tlsMode === "starttls" ? "required" : "none",
        verifyTls: verifyFor(smarthost.host, ctx.config),
        auth: user ? { user, pass: ctx.config["relay.smarthost_password"] } : undefined,
      }],
    };
  }

  // An address at an IP literal (user@[192.0.2.1]) names its host: there is no MX to look up.
  const mx: MxResult = isIP(domain) ? { kind: "hosts", hosts: [domain], implicit: true } : await (ctx.resolveMx ?? resolveMxHosts)(domain);
  if (mx.kind === "none") return { kind: "permanent", reason: mx.reason };
  if (mx.kind === "error") return { kind: "temporary", reason: mx.reason };
  const candidates = directCandidates(domain, mx.hosts, ctx.config);
  // What worked last time goes first, unless it is old enough to re-probe from the top.
  const learned = await findLearnedEndpoint(ctx.db, domain);
  const now = ctx.now ?? Date.now();
  // Its age counts from when it was learned or last confirmed by a probe from the top, not from
  // its last use: a domain with steady mail would never be probed again otherwise.
  if (learned?.ok_at && now - learned.ok_at < ctx.config["delivery.reprobe_after"] * 1000) {
    const key = `${learned.transport}:${learned.endpoint}`;
    const i = candidates.findIndex((c) => candidateKey(c) === key);
    if (i >= 0) {
      candidates.unshift(...candidates.splice(i, 1));
      return { kind: "try", via: "direct", candidates, learn: true, learned: key };
    }
  }
  return { kind: "try", via: "direct", candidates, learn: true };
}

const warnedPlain = new Set<string>();

/** Once per smarthost: its password is about to cross the network in the clear. */
function warnPlainPassword(host: string, port: number): void {
  const key = `${host}:${port}`;
  if (warnedPlain.has(key) || host === "127.0.0.1" || host === "::1" || host === "localhost") return;
  warnedPlain.add(key);
  log.withTag("queue").warn(`relay.smarthost_tls is none: the password of relay.smarthost_user goes to ${key} in the clear; set relay.smarthost_tls starttls or tls`);
}

/** Identifies a candidate in endpoint_cache: transport + URL or host:port. */
export function candidateKey(c: Candidate): string {
  return c.transport === "smtp" ? `smtp:${hostForUrl(c.host)}:${c.port}` : `${c.transport}:${c.url}`;
}

export function servesDomain(e: Pick<ExchangerRow, "domains">, domain: string): boolean {
  if (e.domains === "*") return true;
  return e.domains.split(",").includes(domain);
}

function exchangerRoute(e: ExchangerRow | undefined, name: string, ctx: RouterContext): Route {
  if (!e) return { kind: "temporary", reason: `endpoint rewrite points at exchanger "${name}", which does not exist` };
  if (e.enabled !== 1) return { kind: "temporary", reason: `exchanger "${name}" is disabled` };
  if (e.mode === "pull") return { kind: "hold", exchanger: name, reason: `held for exchanger "${name}" to pull` };
  const candidate = urlCandidate(`${e.url}/mxdeliv`, ctx.config);
  if (candidate.transport !== "smtp" && e.remote_token) candidate.bearer = e.remote_token;
  return { kind: "try", via: "exchanger", candidates: [candidate], learn: false };
}

function reroute(ctx: RouterContext): ExchangerRow | undefined {
  const d = ctx.delivery;
  const after = ctx.config["delivery.reroute_after"] * 1000;
  if (!d) return undefined;
  if (d.rerouted_to) return ctx.exchangers.find((e) => e.name === d.rerouted_to && e.enabled === 1);
  if (after <= 0 || d.tries < 1 || (ctx.now ?? Date.now()) - d.created_at < after) return undefined;
  // Mail held for a pull exchanger is waiting, not failing: it stays for its puller.
  const held = d.route?.startsWith("exchanger:") ? ctx.exchangers.find((e) => `exchanger:${e.name}` === d.route) : undefined;
  if (held && held.enabled === 1 && held.mode === "pull") return undefined;
  return ctx.exchangers.find((e) => e.enabled === 1 && e.fallback === 1);
}

function urlCandidate(url: string, config: Config): Candidate {
  const u = new URL(url);
  return { transport: u.protocol === "https:" ? "https" : "http", url: u.toString(), verifyTls: verifyFor(u.hostname.replace(/^\[|\]$/g, ""), config) };
}

/** A rewrite to a host (optionally with a port) is treated like an MX host of the domain. */
function hostCandidates(host: string, port: number | null, domain: string, config: Config): Candidate[] {
  if (port === null) return directCandidates(domain, [host], config, false);
  const h = hostForUrl(host);
  return [
    urlCandidate(`https://${h}:${port}/mxdeliv`, config),
    urlCandidate(`http://${h}:${port}/mxdeliv`, config),
    { transport: "smtp", host, port, tls: "opportunistic", verifyTls: verifyFor(host, config) },
  ];
}

function directCandidates(domain: string, hosts: string[], config: Config, withDomainUrl = true): Candidate[] {
  const out: Candidate[] = [];
  const seen = new Set<string>();
  const add = (c: Candidate) => {
    const k = candidateKey(c);
    if (!seen.has(k)) {
      seen.add(k);
      out.push(c);
    }
  };
  for (const host of hosts) {
    const h = hostForUrl(host);
    add(urlCandidate(`https://${h}/mxdeliv`, config));
    if (withDomainUrl) add(urlCandidate(`https://${hostForUrl(domain)}/mxdeliv`, config));
    add(urlCandidate(`http://${h}/mxdeliv`, config));
    add({ transport: "smtp", host, port: 25, tls: "opportunistic", verifyTls: verifyFor(host, config) });
  }
  return out;
}

/** delivery.tls_verify: auto checks certificates of names, not of IP literals. */
function verifyFor(host: string, config: Config): boolean {
  const mode = config["delivery.tls_verify"];
  if (mode !== "auto") return mode === "always";
  return !/^[\d.]+$/.test(host) && !host.includes(":");
}
