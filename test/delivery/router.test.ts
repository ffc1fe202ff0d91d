// The router's decisions, table by table, against a real state file and a fake MX resolver.
import { beforeAll, describe, expect, test } from "bun:test";
import { loadConfig, settingsRegistry } from "../../src/db/settings.ts";
import { candidateKey, routeDomain, type RouterContext } from "../../src/delivery/router.ts";
import { loadOverrides, upsertOverride } from "../../src/delivery/endpoint-overrides.ts";
import { learnEndpoint } from "../../src/delivery/endpoint-cache.ts";
import { toRules } from "../../src/policy/federation.ts";
import { nextAttemptAt } from "../../src/queue/schedule.ts";
import type { MxResult } from "../../src/delivery/mx.ts";
import type { ExchangerRow } from "../../src/db/schema.ts";
import { useStateFile } from "../helpers/state-file.ts";

const file = useStateFile("router", "file");
beforeAll(async () => {
  await upsertOverride(file.state.db, "rewritten.test", "https://relay.test:8443/mxdeliv", null);
  await upsertOverride(file.state.db, "*.wild.test", "10.0.0.9", null);
  await upsertOverride(file.state.db, "deep.x.wild.test", "exact.test:2525", null);
  await upsertOverride(file.state.db, "via-pull.test", "exchanger:hub", null);
});

const mxTable: Record<string, MxResult> = {
  "two.test": { kind: "hosts", hosts: ["mx1.two.test", "mx2.two.test"], implicit: false },
  "learned.test": { kind: "hosts", hosts: ["mx.learned.test"], implicit: false },
  "nullmx.test": { kind: "none", reason: "nullmx.test publishes a null MX: it accepts no mail" },
  "flaky.test": { kind: "error", reason: "MX lookup for flaky.test failed: ESERVFAIL" },
};

const exchanger = (o: Partial<ExchangerRow>): ExchangerRow => ({
  name: "x", url: "https://x.test", enabled: 1, mode: "push", poll_interval: 60, domains: "", fallback: 0, token_hash: null, remote_token: null,
  last_poll_at: null, last_pull_at: null, last_error: null, created_at: 0, updated_at: 0, ...o,
});

async function ctx(over: Partial<RouterContext> = {}): Promise<RouterContext> {
  return {
    db: file.state.db, config: await loadConfig(file.state.db), overrides: await loadOverrides(file.state.db), rules: toRules("accept", [{ domain: "blocked.test", kind: "block" }, { domain: "quiet.test", kind: "dismiss" }]),
    localDomains: new Set(["a.test"]), exchangers: [
      exchanger({ name: "hub", mode: "pull", domains: "" }),
      exchanger({ name: "pusher", url: "https://push.test", domains: "pushed.test" }),
      exchanger({ name: "spare", url: "https://spare.test", domains: "*", fallback: 1 }),
    ],
    resolveMx: async (d) => mxTable[d] ?? { kind: "none", reason: `${d} has no MX and no address (ENOTFOUND)` },
    ...over,
  };
}

const keys = async (domain: string, over?: Partial<RouterContext>) => {
  const r = await routeDomain(domain, await ctx(over));
  return r.kind === "try" ? { via: r.via, keys: r.candidates.map(candidateKey) } : r;
};

describe("routeDomain", () => {
  test.each([
    ["blocked.test", { kind: "reject", reason: "blocked.test is refused by the federation policy" }],
    ["sub.blocked.test", { kind: "reject", reason: "sub.blocked.test is refused by the federation policy" }],
    ["quiet.test", { kind: "dismiss", reason: "quiet.test is on the dismiss list" }],
    ["via-pull.test", { kind: "hold", exchanger: "hub", reason: 'held for exchanger "hub" to pull' }],
    ["nullmx.test", { kind: "permanent", reason: "nullmx.test publishes a null MX: it accepts no mail" }],
    ["flaky.test", { kind: "temporary", reason: "MX lookup for flaky.test failed: ESERVFAIL" }],
  ])("%s -> %o", async (domain, expected) => {
    expect(await routeDomain(domain, await ctx())).toEqual(expected as never);
  });

  test("endpoint rewrites: URL, wildcard host, exact beats wildcard", async () => {
    expect(await keys("rewritten.test")).toEqual({ via: "rewrite", keys: ["https:https://relay.test:8443/mxdeliv"] });
    expect(await keys("a.wild.test")).toEqual({ via: "rewrite", keys: ["https:https://10.0.0.9/mxdeliv", "http:http://10.0.0.9/mxdeliv", "smtp:10.0.0.9:25"] });
    expect(await keys("deep.x.wild.test")).toEqual({
      via: "rewrite", keys: ["https:https://exact.test:2525/mxdeliv", "http:http://exact.test:2525/mxdeliv", "smtp:exact.test:2525"],
    });
    // The wildcard does not match the bare parent domain.
    expect(await keys("wild.test")).toMatchObject({ kind: "permanent" });
  });

  test("a push exchanger serving the domain; a fallback exchanger is not used for routing", async () => {
    expect(await keys("pushed.test")).toEqual({ via: "exchanger", keys: ["https:https://push.test/mxdeliv"] });
    expect(await keys("two.test")).toMatchObject({ via: "direct" });
  });

  test("relay.smarthost off (as for the listeners) means none, not a host named off", async () => {
    expect(settingsRegistry["relay.smarthost"].parse("off")).toBeNull();
    expect(settingsRegistry["relay.smarthost"].parse(" OFF ")).toBeNull();
    expect(settingsRegistry["relay.smarthost"].parse("mail.example.net:587")).toEqual({ host: "mail.example.net", port: 587 });
  });

  test("a smarthost password over plain SMTP is warned about once (not for loopback)", async () => {
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (lines.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      const base = await loadConfig(file.state.db);
      for (const host of ["smart.test", "smart.test", "127.0.0.1"]) {
        const config = { ...base, "relay.smarthost": { host, port: 25 }, "relay.smarthost_tls": "none" as const, "relay.smarthost_user": "u" };
        expect(await keys("two.test", { config })).toMatchObject({ via: "smarthost" });
      }
    } finally {
      process.stderr.write = write;
    }
    expect(lines.filter((l) => l.includes("in the clear"))).toHaveLength(1);
    expect(lines.join("")).toContain("goes to smart.test:25 in the clear");
  });

  test("smarthost takes all remote mail that no rewrite or exchanger claims", async () => {
    const config = { ...(await loadConfig(file.state.db)), "relay.smarthost": { host: "smart.test", port: 587 } };
    expect(await keys("two.test", { config })).toEqual({ via: "smarthost", keys: ["smtp:smart.test:587"] });
    expect(await keys("rewritten.test", { config })).toMatchObject({ via: "rewrite" });
  });

  test("direct: per MX host https, https://domain once, http, smtp:25, in preference order", async () => {
    expect(await keys("two.test")).toEqual({
      via: "direct",
      keys: [
        "https:https://mx1.two.test/mxdeliv", "https:https://two.test/mxdeliv", "http:http://mx1.two.test/mxdeliv", "smtp:mx1.two.test:25",
        "https:https://mx2.two.test/mxdeliv", "http:http://mx2.two.test/mxdeliv", "smtp:mx2.two.test:25",
      ],
    });
  });

  test("a learned endpoint goes first until it is old enough to re-probe", async () => {
    await learnEndpoint(file.state.db, "learned.test", "smtp", "mx.learned.test:25", true, Date.now());
    expect((await keys("learned.test")) as { keys: string[] }).toMatchObject({ keys: ["smtp:mx.learned.test:25", "https:https://mx.learned.test/mxdeliv", "https:https://learned.test/mxdeliv", "http:http://mx.learned.test/mxdeliv"] });
    expect(await routeDomain("learned.test", await ctx())).toMatchObject({ learned: "smtp:mx.learned.test:25" });
    const later = Date.now() + 2 * 3600_000;
    expect((await keys("learned.test", { now: later })) as { keys: string[] }).toMatchObject({ keys: ["https:https://mx.learned.test/mxdeliv", "https:https://learned.test/mxdeliv", "http:http://mx.learned.test/mxdeliv", "smtp:mx.learned.test:25"] });
    // Probing from the top: whatever takes the message is learned anew, with a new age.
    expect(await routeDomain("learned.test", await ctx({ now: later }))).not.toHaveProperty("learned");
  });

  test("an address at an IP literal goes to that host: https, http, smtp:25 (no MX lookup)", async () => {
    expect(await keys("192.0.2.7")).toEqual({ via: "direct", keys: ["https:https://192.0.2.7/mxdeliv", "http:http://192.0.2.7/mxdeliv", "smtp:192.0.2.7:25"] });
    expect(await keys("2001:db8::7")).toEqual({
      via: "direct", keys: ["https:https://[2001:db8::7]/mxdeliv", "http:http://[2001:db8::7]/mxdeliv", "smtp:[2001:db8::7]:25"],
    });
  });
});

describe("retry schedule", () => {
  const schedule = [60, 300, 900, 1800, 3600, 7200];
  test.each([[1, 60], [2, 300], [6, 7200], [7, 7200], [50, 7200]])("try %d waits about %d s, within ±10%%", (tries, wait) => {
    for (const r of [0, 0.5, 0.999]) {
      const dt = (nextAttemptAt(schedule, tries, 0, () => r)) / 1000;
      expect(dt).toBeGreaterThanOrEqual(wait * 0.9);
      expect(dt).toBeLessThanOrEqual(wait * 1.1);
    }
    expect(nextAttemptAt(schedule, tries, 0, () => 0)).not.toBe(nextAttemptAt(schedule, tries, 0, () => 0.99));
  });
});
