// madmail queue: list, show, retry, hold, release, delete, flush, stats, dead. The state file
// is created by `madmail init`, then filled directly (as the delivery worker would leave it).
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** The body of M1: a header block, then an encrypted body that must never be printed. */
const HEAD1 = [
  "Received: from [10.0.0.5] (unknown [10.0.0.5]) by chat.test with ESMTPSA; Sat, 21 Nov 2026 09:00:00 +0000",
  "From: <alice@chat.test>",
  "To: <bob@b.example>, <carol@b.example>, <dan@c.example>",
  "Subject: [...]",
  "X-Trick: \x1b[31mred\x07",
  "Message-ID: <m1@chat.test>",
  "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";",
  "\tboundary=\"XYZ\"",
  "MIME-Version: 1.0",
].join("\r\n");
const BODY1 = HEAD1 + "\r\n\r\n--XYZ\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nSECRET-BODY-TEXT\r\n-----END PGP MESSAGE-----\r\n--XYZ--\r\n";

const ID = {
  d1a: "0jm1aaaaaaaab001", d1b: "0jm1aaaaaaaab002", d2: "0jm2bbbbbbbbc001", d3: "0jm3ccccccccd001",
  d4: "0jm4dddddddde001", d5: "0jm5eeeeeeeee001", d6: "0jm6fffffffff001",
};

let sb: Sandbox;
let T: number;
beforeEach(async () => {
  sb = sandbox();
  expect((await sb.run(["init", "--quiet"])).code).toBe(0);
  T = Date.now();
  seed(T);
});
afterEach(() => sb.cleanup());

interface Msg { id: string; from: string; body: string | Uint8Array; door: string; auth?: string; received: number }
interface Dlv {
  id: string; msg: string; domain: string; rcpts: string[]; state: string; tries?: number; next: number; lease?: number;
  error?: string; route?: string; created: number; expires?: number; rerouted?: string;
}
interface Att { d: string; at: number; transport: string; endpoint: string; outcome: string; detail: string | null; ms: number | null }

function insert(msgs: Msg[], dlvs: Dlv[], atts: Att[] = []): void {
  const db = new Database(sb.db);
  try {
    db.transaction(() => {
      for (const m of msgs) {
        const body = typeof m.body === "string" ? new TextEncoder().encode(m.body) : m.body;
        db.query("INSERT INTO messages (id, mail_from, body, size, door, auth_user, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
          .run(m.id, m.from, body, body.length, m.door, m.auth ?? null, m.received);
      }
      for (const d of dlvs) {
        db.query(`INSERT INTO deliveries (id, message_id, rcpt_domain, rcpts, state, route, tries, next_attempt_at, lease_until, last_error,
          created_at, updated_at, expires_at, rerouted_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
          .run(d.id, d.msg, d.domain, JSON.stringify(d.rcpts), d.state, d.route ?? null, d.tries ?? 0, d.next, d.lease ?? null, d.error ?? null,
            d.created, d.created, d.expires ?? d.created + 5 * DAY, d.rerouted ?? null);
      }
      for (const a of atts) {
        db.query("INSERT INTO delivery_attempts (delivery_id, at, transport, endpoint, outcome, detail, ms) VALUES (?, ?, ?, ?, ?, ?, ?)")
          .run(a.d, a.at, a.transport, a.endpoint, a.outcome, a.detail, a.ms);
      }
    })();
  } finally {
    db.close();
  }
}

function seed(t: number): void {
  insert(
    [
      { id: "0jm1aaaaaaaaaaaa", from: "alice@chat.test", body: BODY1, door: "submission", auth: "alice@chat.test", received: t - 3 * DAY },
      { id: "0jm2bbbbbbbbbbbb", from: "bob@chat.test", body: "Subject: big\r\n\r\n" + "x".repeat(20000 - 16), door: "lmtp", received: t - 2 * HOUR },
      { id: "0jm3cccccccccccc", from: "", body: "Subject: bounce\r\n\r\nreport", door: "smtp", received: t - 45 * MIN },
      { id: "0jm4dddddddddddd", from: "carol@chat.test", body: "Subject: a\r\n\r\nb", door: "submission", auth: "carol@chat.test", received: t - 30 * MIN },
      { id: "0jm5eeeeeeeeeeee", from: "dave@chat.test", body: "Subject: a\r\n\r\nb", door: "mxdeliv", received: t - 20 * MIN },
      { id: "0jm6ffffffffffff", from: "erin@chat.test", body: "Subject: a\r\n\r\nb", door: "submission", received: t - 4 * HOUR },
    ],
    [
      { id: ID.d1a, msg: "0jm1aaaaaaaaaaaa", domain: "b.example", rcpts: ["bob@b.example", "carol@b.example"], state: "deferred", tries: 7,
        next: t + 20 * MIN + 30_000, route: "smtp:mx.b.example:25", created: t - 3 * DAY, expires: t + 2 * DAY,
        error: "421 4.7.0 mx.b.example: too many connections from your host, please try again later\r\n421 closing" },
      { id: ID.d1b, msg: "0jm1aaaaaaaaaaaa", domain: "c.example", rcpts: ["dan@c.example"], state: "dead", tries: 3, next: t - 2 * DAY,
        route: "https:mx.c.example", created: t - 3 * DAY, expires: t + 2 * DAY, error: "HTTP 404 from https://mx.c.example/mxdeliv: unknown recipient" },
      { id: ID.d2, msg: "0jm2bbbbbbbbbbbb", domain: "b.example", rcpts: ["bob@b.example"], state: "queued", next: t - 2 * HOUR, created: t - 2 * HOUR },
      { id: ID.d3, msg: "0jm3cccccccccccc", domain: "d.example", rcpts: ["x@d.example"], state: "held", tries: 1, next: t + HOUR,
        error: "connect ETIMEDOUT 192.0.2.7:443", created: t - 45 * MIN },
      { id: ID.d4, msg: "0jm4dddddddddddd", domain: "e.example", rcpts: ["eve@e.example"], state: "delivering", tries: 2, next: t - MIN,
        lease: t + 10 * MIN, created: t - 30 * MIN, rerouted: "relay1" },
      { id: ID.d5, msg: "0jm5eeeeeeeeeeee", domain: "e.example", rcpts: ["fred@e.example"], state: "delivering", tries: 1, next: t - 30 * MIN,
        lease: t - 5 * MIN, created: t - 20 * MIN },
      { id: ID.d6, msg: "0jm6ffffffffffff", domain: "b.example", rcpts: ["bob@b.example"], state: "delivered", tries: 1, next: t - 4 * HOUR,
        route: "https:mx.b.example", created: t - 4 * HOUR },
    ],
    [
      { d: ID.d1a, at: t - 3 * DAY + MIN, transport: "https", endpoint: "https://mx.b.example/mxdeliv", outcome: "temporary", detail: "connect ECONNREFUSED 192.0.2.1:443", ms: 12 },
      { d: ID.d1a, at: t - 3 * DAY + MIN, transport: "smtp", endpoint: "mx.b.example:25", outcome: "temporary", detail: "421 4.7.0 too many connections", ms: 240 },
      { d: ID.d1a, at: t - HOUR, transport: "smtp", endpoint: "mx.b.example:25", outcome: "temporary", detail: "421 4.7.0 too many\r\nconnections", ms: null },
      { d: ID.d1b, at: t - 3 * DAY + MIN, transport: "https", endpoint: "https://mx.c.example/mxdeliv", outcome: "permanent", detail: "HTTP 404", ms: 33 },
      { d: ID.d6, at: t - 4 * HOUR, transport: "https", endpoint: "https://mx.b.example/mxdeliv", outcome: "delivered", detail: "HTTP 200", ms: 41 },
    ],
  );
}

interface Row { id: string; state: string; next_attempt_at: number; expires_at: number; lease_until: number | null; updated_at: number; tries: number }
function row(id: string): Row | null {
  const db = new Database(sb.db, { readonly: true });
  try {
    return db.query("SELECT * FROM deliveries WHERE id = ?").get(id) as Row | null;
  } finally {
    db.close();
  }
}
function count(sql: string, ...params: string[]): number {
  const db = new Database(sb.db, { readonly: true });
  try {
    return (db.query(sql).get(...params) as { n: number }).n;
  } finally {
    db.close();
  }
}

function emptyQueue(): void {
  const db = new Database(sb.db);
  db.exec("DELETE FROM delivery_attempts; DELETE FROM deliveries; DELETE FROM messages;");
  db.close();
}

const ok = async (args: string[], stderr = "") => {
  const r = await sb.run(args);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr });
  return r.stdout;
};
const json = async (args: string[]) => JSON.parse(await ok([...args, "--json"]));
/** Runs a command that must be refused and proves the state file did not change. */
const refused = async (args: string[], code: number, stderr: string) => {
  const before = dumpDb(sb.db);
  const r = await sb.run(args);
  expect({ args, ...r }).toEqual({ args, code, stdout: "", stderr: `madmail: ${stderr}\n` });
  expect(dumpDb(sb.db)).toBe(before);
};
const ids = (entries: { id: string }[]) => entries.map((e) => e.id);

describe("list", () => {
  test("table: pending entries oldest first, every column, errors cut to one line", async () => {
    expect(await ok(["queue", "list"])).toBe([
      "ID                AGE  SIZE  FROM             TO-DOMAIN  RCPTS             TRIES  NEXT    STATE       LAST ERROR",
      "0jm1aaaaaaaab001  3d   497   alice@chat.test  b.example  bob@b.example +1  7      in 20m  deferred    421 4.7.0 mx.b.example: too many connections from your ho...",
      "0jm1aaaaaaaab002  3d   497   alice@chat.test  c.example  dan@c.example     3      -       dead        HTTP 404 from https://mx.c.example/mxdeliv: unknown recip...",
      "0jm2bbbbbbbbc001  2h   20K   bob@chat.test    b.example  bob@b.example     0      now     queued",
      "0jm3ccccccccd001  45m  25    <>               d.example  x@d.example       1      -       held        connect ETIMEDOUT 192.0.2.7:443",
      "0jm4dddddddde001  30m  15    carol@chat.test  e.example  eve@e.example     2      -       delivering",
      "0jm5eeeeeeeee001  20m  15    dave@chat.test   e.example  fred@e.example    1      -       delivering",
      "",
    ].join("\n"));
  });

  test("JSON: the documented fields, ISO times, full error", async () => {
    const all = await json(["queue", "list"]);
    expect(ids(all)).toEqual([ID.d1a, ID.d1b, ID.d2, ID.d3, ID.d4, ID.d5]);
    expect(all[0]).toEqual({
      id: ID.d1a, message_id: "0jm1aaaaaaaaaaaa", state: "deferred", from: "alice@chat.test", rcpt_domain: "b.example",
      rcpts: ["bob@b.example", "carol@b.example"], size: BODY1.length, tries: 7,
      created_at: new Date(T - 3 * DAY).toISOString(), next_attempt_at: new Date(T + 20 * MIN + 30_000).toISOString(),
      last_error: "421 4.7.0 mx.b.example: too many connections from your host, please try again later\r\n421 closing",
      route: "smtp:mx.b.example:25", rerouted_to: null,
    });
    expect(Object.keys(all[4])).toEqual([
      "id", "message_id", "state", "from", "rcpt_domain", "rcpts", "size", "tries", "created_at", "next_attempt_at", "last_error", "route", "rerouted_to",
    ]);
    expect(all[4]).toMatchObject({ state: "delivering", rerouted_to: "relay1", last_error: null, route: null });
    // A time to wait for only where there is one: `-` in the table, null here.
    for (const e of all) {
      expect([e.created_at, e.next_attempt_at]).toEqual([expect.stringMatching(ISO), ["queued", "deferred"].includes(e.state) ? expect.stringMatching(ISO) : null]);
    }
  });

  test.each([
    [["--state", "delivered"], [ID.d6]],
    [["--state", "dead"], [ID.d1b]],
    [["--state", "delivering"], [ID.d4, ID.d5]],
    [["--domain", "b.example"], [ID.d1a, ID.d2]],
    [["--domain", "B.Example."], [ID.d1a, ID.d2]],
    [["--domain", "b.example", "--state", "queued"], [ID.d2]],
    [["--domain", "b.example", "--state", "delivered"], [ID.d6]],
    [["--domain", "nowhere.example"], []],
    [["--limit", "0"], [ID.d1a, ID.d1b, ID.d2, ID.d3, ID.d4, ID.d5]],
    [["--limit", "6"], [ID.d1a, ID.d1b, ID.d2, ID.d3, ID.d4, ID.d5]],
  ])("filters %p", async (flags, expected) => {
    expect(ids(await json(["queue", "list", ...flags]))).toEqual(expected);
  });

  test("--limit shows the oldest N and says on stderr how many there are", async () => {
    const r = await sb.run(["queue", "list", "--limit", "2", "--json"]);
    expect(r.code).toBe(0);
    expect(ids(JSON.parse(r.stdout))).toEqual([ID.d1a, ID.d1b]);
    expect(r.stderr).toBe("Showing the oldest 2 of 6 entries; --limit 0 shows all.\n");
    expect((await ok(["queue", "list", "--limit", "1", "--domain", "e.example"], "Showing the oldest 1 of 2 entries; --limit 0 shows all.\n")).split("\n")[1])
      .toStartWith(ID.d4);
    expect((await ok(["queue", "list", "--limit", "1", "--quiet"])).split("\n").length).toBe(3);
  });

  test("empty results", async () => {
    expect(await ok(["queue", "list", "--domain", "nowhere.example"])).toBe("No queue entries match.\n");
    expect(await ok(["queue", "list", "--state", "queued", "--domain", "c.example", "--json"])).toBe("[]\n");
    emptyQueue();
    expect(await ok(["queue", "list"])).toBe("The queue is empty.\n");
    expect(await ok(["queue", "dead"])).toBe("No dead queue entries.\n");
  });

  test("dead lists dead entries with the same columns", async () => {
    const out = await ok(["queue", "dead"]);
    expect(out.split("\n")[0]).toBe("ID                AGE  SIZE  FROM             TO-DOMAIN  RCPTS          TRIES  NEXT  STATE  LAST ERROR");
    expect(out.split("\n").slice(1)).toEqual([
      "0jm1aaaaaaaab002  3d   497   alice@chat.test  c.example  dan@c.example  3      -     dead   HTTP 404 from https://mx.c.example/mxdeliv: unknown recip...",
      "",
    ]);
    const dead = await json(["queue", "dead"]);
    expect(dead).toEqual([(await json(["queue", "list", "--state", "dead"]))[0]]);
    expect(ids(await json(["queue", "dead", "--domain", "b.example"]))).toEqual([]);
  });

  test.each([
    [["--state", "bogus"], "Invalid value for argument: --state (bogus). Expected one of: queued, deferred, held, delivering, delivered, dead.\nRun `madmail queue list --help` for usage."],
    [["--limit", "-1"], 'invalid --limit "-1": expected a whole number (0 = all)'],
    [["--limit", "ten"], 'invalid --limit "ten": expected a whole number (0 = all)'],
    [["--domain", "a..b"], 'invalid domain "a..b": expected a name like chat.example.org or an IP literal'],
    [["--bogus"], 'unknown option "--bogus"\nRun `madmail queue list --help` for usage.'],
    [["extra"], "too many arguments\nRun `madmail queue list --help` for usage."],
  ])("refuses %p with exit 2", async (flags, message) => {
    await refused(["queue", "list", ...flags], 2, message);
  });
});

describe("show", () => {
  test("envelope, state, attempts and header block; never the body", async () => {
    const out = await ok(["queue", "show", ID.d1a]);
    const lines = out.split("\n");
    expect(lines.slice(0, 16).map((l) => l.replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/, "TIME"))).toEqual([
      "ID:           0jm1aaaaaaaab001",
      "Message:      0jm1aaaaaaaaaaaa",
      "State:        deferred",
      "From:         alice@chat.test",
      "To:           bob@b.example, carol@b.example",
      "Domain:       b.example",
      `Size:         497 (${BODY1.length} bytes)`,
      "Door:         submission (authenticated as alice@chat.test)",
      "Received:     TIME (3d ago)",
      "Tries:        7",
      "Next attempt: TIME (in 20m)",
      "Expires:      TIME (in 1d23h)",
      "Route:        smtp:mx.b.example:25",
      "Rerouted to:  -",
      "Last error:   421 4.7.0 mx.b.example: too many connections from your host, please try again later 421 closing",
      "",
    ]);
    expect(out).toContain([
      "ATTEMPTS",
      "TIME                 TRANSPORT  ENDPOINT                      OUTCOME    DETAIL                              MS",
    ].join("\n"));
    expect(out).toContain("  smtp       mx.b.example:25               temporary  421 4.7.0 too many connections      240\n");
    expect(out).toContain("  smtp       mx.b.example:25               temporary  421 4.7.0 too many connections      -\n");
    // The header block as stored, control characters made visible.
    expect(out).toEndWith("\nHEADERS\n" + HEAD1.replace(/\r\n/g, "\n").replace("\x1b", "\\x1b").replace("\x07", "\\x07") + "\n");
    expect(out).not.toContain("SECRET-BODY-TEXT");
    expect(out).not.toContain("\x1b");
  });

  test("JSON", async () => {
    const s = await json(["queue", "show", ID.d1a]);
    expect(Object.keys(s)).toEqual([
      "id", "message_id", "state", "from", "rcpt_domain", "rcpts", "size", "door", "auth_user", "received_at", "created_at", "updated_at",
      "tries", "next_attempt_at", "lease_until", "expires_at", "route", "rerouted_to", "last_error", "attempts", "headers", "headers_truncated",
    ]);
    expect(s).toMatchObject({
      id: ID.d1a, message_id: "0jm1aaaaaaaaaaaa", state: "deferred", from: "alice@chat.test", rcpt_domain: "b.example",
      rcpts: ["bob@b.example", "carol@b.example"], size: BODY1.length, door: "submission", auth_user: "alice@chat.test",
      received_at: new Date(T - 3 * DAY).toISOString(), tries: 7, lease_until: null, expires_at: new Date(T + 2 * DAY).toISOString(),
      route: "smtp:mx.b.example:25", rerouted_to: null, headers: HEAD1.replace(/\r\n/g, "\n"), headers_truncated: false,
    });
    expect(s.attempts).toEqual([
      { at: new Date(T - 3 * DAY + MIN).toISOString(), transport: "https", endpoint: "https://mx.b.example/mxdeliv", outcome: "temporary", detail: "connect ECONNREFUSED 192.0.2.1:443", ms: 12 },
      { at: new Date(T - 3 * DAY + MIN).toISOString(), transport: "smtp", endpoint: "mx.b.example:25", outcome: "temporary", detail: "421 4.7.0 too many connections", ms: 240 },
      { at: new Date(T - HOUR).toISOString(), transport: "smtp", endpoint: "mx.b.example:25", outcome: "temporary", detail: "421 4.7.0 too many\r\nconnections", ms: null },
    ]);
    expect(JSON.stringify(s)).not.toContain("SECRET-BODY-TEXT");
  });

  test("other states: bounce sender, no attempts, leases", async () => {
    const held = await ok(["queue", "show", ID.d3]);
    expect(held).toContain("\nFrom:         <>\n");
    expect(held).toContain("\nNext attempt: -\n");
    expect(held).toContain("\nATTEMPTS\n(none yet)\n\nHEADERS\nSubject: bounce\n");
    expect(await ok(["queue", "show", ID.d4])).toMatch(/\nState: {8}delivering\n[\s\S]*\nLease until:  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in 9m\)\n/);
    expect(await ok(["queue", "show", ID.d5])).toMatch(/\nState: {8}delivering \(lease lapsed: the server takes it up again\)\n[\s\S]*\nLease until:  .* \(5m ago\)\n/);
    expect((await json(["queue", "show", ID.d4])).lease_until).toBe(new Date(T + 10 * MIN).toISOString());
  });

  test("a header block longer than 64 KiB is cut there", async () => {
    const longHead = Array.from({ length: 2000 }, (_, i) => `X-Filler-${i}: ${"y".repeat(40)}`).join("\r\n");
    insert([{ id: "0jm7gggggggggggg", from: "a@chat.test", body: longHead + "\r\n\r\nbody", door: "smtp", received: T }],
      [{ id: "0jm7ggggggggh001", msg: "0jm7gggggggggggg", domain: "b.example", rcpts: ["b@b.example"], state: "queued", next: T, created: T }]);
    const s = await json(["queue", "show", "0jm7ggggggggh001"]);
    expect(s.headers_truncated).toBe(true);
    expect(s.headers.length).toBeLessThanOrEqual(65536);
    expect(s.headers).toStartWith("X-Filler-0: ");
    expect(await ok(["queue", "show", "0jm7ggggggggh001"])).toEndWith("\n(header block longer than 64 KiB; cut there)\n");
  });

  test("an obsolete 'Name : value' field and a leading mbox From line belong to the header block", async () => {
    insert([{ id: "0jm7kkkkkkkkkkkk", from: "a@chat.test", body: "From a@chat.test Sat Nov 21 10:00:00 2026\r\nSubject : old style\r\nX-After: shown\r\n\r\nSECRET-BODY-TEXT\r\n", door: "smtp", received: T }],
      [{ id: "0jm7kkkkkkkkm001", msg: "0jm7kkkkkkkkkkkk", domain: "b.example", rcpts: ["b@b.example"], state: "queued", next: T, created: T }]);
    const s = await json(["queue", "show", "0jm7kkkkkkkkm001"]);
    expect(s.headers).toBe("From a@chat.test Sat Nov 21 10:00:00 2026\nSubject : old style\nX-After: shown");
    expect(s.headers_truncated).toBe(false);
  });

  test("without the empty line, the header block ends at the first line that is no header field", async () => {
    const binary = new Uint8Array(3000).map((_, i) => (i * 7919) % 256);
    insert(
      [
        { id: "0jm7hhhhhhhhhhhh", from: "a@chat.test", body: "Subject: x\r\n Folded\r\n-----BEGIN PGP MESSAGE-----\r\nSECRET-BODY-TEXT\r\n", door: "smtp", received: T },
        { id: "0jm7jjjjjjjjjjjj", from: "a@chat.test", body: binary, door: "smtp", received: T },
      ],
      [
        { id: "0jm7hhhhhhhhk001", msg: "0jm7hhhhhhhhhhhh", domain: "b.example", rcpts: ["b@b.example"], state: "queued", next: T, created: T },
        { id: "0jm7jjjjjjjjk001", msg: "0jm7jjjjjjjjjjjj", domain: "b.example", rcpts: ["b@b.example"], state: "queued", next: T, created: T,
          error: "550 \x1b]0;owned\x07 bad" },
      ],
    );
    expect(await json(["queue", "show", "0jm7hhhhhhhhk001"])).toMatchObject({ headers: "Subject: x\n Folded", headers_truncated: false });
    expect(await ok(["queue", "show", "0jm7hhhhhhhhk001"])).toEndWith("\nHEADERS\nSubject: x\n Folded\n");
    expect(await json(["queue", "show", "0jm7jjjjjjjjk001"])).toMatchObject({ headers: "", headers_truncated: false, last_error: "550 \x1b]0;owned\x07 bad" });
    const shown = await ok(["queue", "show", "0jm7jjjjjjjjk001"]);
    expect(shown).toContain("\nLast error:   550 ]0;owned bad\n");
    expect(shown).toEndWith("\nHEADERS\n\n");
    expect(await ok(["queue", "list", "--state", "queued"])).not.toContain("\x1b");
  });

  test("a unique prefix is enough; an exact ID wins", async () => {
    expect((await json(["queue", "show", "0jm2"])).id).toBe(ID.d2);
    expect((await json(["queue", "show", "0jm1aaaaaaaab002"])).id).toBe(ID.d1b);
  });

  test("ambiguous prefix: exit 2 listing the candidates", async () => {
    await refused(["queue", "show", "0jm1"], 2, [
      'queue ID prefix "0jm1" is ambiguous; it matches:',
      "  0jm1aaaaaaaab001  deferred  b.example",
      "  0jm1aaaaaaaab002  dead  c.example",
      "give more characters",
    ].join("\n"));
  });

  test("ambiguous prefix with many candidates lists ten", async () => {
    insert([], Array.from({ length: 12 }, (_, i) => ({
      id: `0jm8hhhhhhhh${String(i).padStart(4, "0")}`, msg: "0jm2bbbbbbbbbbbb", domain: `x${i}.example`, rcpts: [`a@x${i}.example`], state: "queued", next: T, created: T,
    })));
    const r = await sb.run(["queue", "show", "0jm8hhhh"]);
    expect(r.code).toBe(2);
    expect(r.stderr.split("\n").filter((l) => l.startsWith("  0jm8"))).toHaveLength(10);
    expect(r.stderr).toContain("\n  ...\ngive more characters\n");
  });

  test.each([
    [["zzzzzzzzzzzzzzzz"], 1, 'no queue entry "zzzzzzzzzzzzzzzz"'],
    [["0jm9"], 1, 'no queue entry "0jm9"'],
    [["0jm"], 2, 'queue ID prefix "0jm" is too short: give at least 4 characters'],
    [["0j m"], 2, 'invalid queue ID "0j m": expected the letters and digits shown by `madmail queue list`'],
    [["../x"], 2, 'invalid queue ID "../x": expected the letters and digits shown by `madmail queue list`'],
    [[], 2, "Missing required positional argument: ID\nRun `madmail queue show --help` for usage."],
  ])("refuses %p", async (args, code, message) => {
    await refused(["queue", "show", ...args], code, message);
  });
});

describe("retry", () => {
  test("a deferred entry becomes queued and due now", async () => {
    const before = Date.now();
    expect(await ok(["queue", "retry", ID.d1a])).toBe(`Requeued 1 queue entry: ${ID.d1a}.\n`);
    const r = row(ID.d1a)!;
    expect(r).toMatchObject({ state: "queued", tries: 7, expires_at: T + 2 * DAY, lease_until: null });
    expect(r.next_attempt_at).toBeGreaterThanOrEqual(before);
    expect(r.next_attempt_at).toBeLessThanOrEqual(Date.now());
    expect(r.updated_at).toBe(r.next_attempt_at);
  });

  test("a dead entry (by prefix) gets a new lifetime: queue.lifetime, 5 days by default", async () => {
    const before = Date.now();
    expect(await ok(["queue", "retry", "0jm1aaaaaaaab002"])).toBe(`Requeued 1 queue entry: ${ID.d1b}.\n`);
    const r = row(ID.d1b)!;
    expect(r.state).toBe("queued");
    expect(r.expires_at - r.next_attempt_at).toBe(5 * DAY);
    expect(r.next_attempt_at).toBeGreaterThanOrEqual(before);
    // The setting, when set, is what counts.
    await ok(["config", "set", "queue.lifetime", "2d"]);
    await ok(["queue", "hold", ID.d1b]);
    const db = new Database(sb.db);
    db.query("UPDATE deliveries SET state = 'dead' WHERE id = ?").run(ID.d1b);
    db.close();
    expect(await json(["queue", "retry", ID.d1b])).toEqual({ requeued: 1, ids: [ID.d1b] });
    const r2 = row(ID.d1b)!;
    expect(r2.expires_at - r2.next_attempt_at).toBe(2 * DAY);
  });

  test("--domain: deferred and dead entries of one domain", async () => {
    insert([], [{ id: "0jm1aaaaaaaab003", msg: "0jm1aaaaaaaaaaaa", domain: "c.example", rcpts: ["eve@c.example"], state: "deferred", next: T + HOUR, created: T - DAY }]);
    expect(await ok(["queue", "retry", "--domain", "C.example"])).toBe("Requeued 2 queue entries.\n");
    expect([row(ID.d1b)!.state, row("0jm1aaaaaaaab003")!.state, row(ID.d1a)!.state]).toEqual(["queued", "queued", "deferred"]);
    expect(await json(["queue", "retry", "--domain", "c.example"])).toEqual({ requeued: 0, ids: [] });
  });

  test("--all: every deferred and dead entry, nothing else", async () => {
    const before = dumpDb(sb.db);
    expect(await json(["queue", "retry", "--all"])).toEqual({ requeued: 2, ids: [ID.d1a, ID.d1b] });
    expect(Object.values(ID).map((id) => row(id)!.state)).toEqual(["queued", "queued", "queued", "held", "delivering", "delivering", "delivered"]);
    expect(dumpDb(sb.db)).not.toBe(before);
    expect(await ok(["queue", "retry", "--all"])).toBe("Requeued 0 queue entries.\n");
    expect(await ok(["queue", "retry", "--all", "--quiet"])).toBe("");
  });

  test.each([
    [[ID.d2], 1, `queue entry ${ID.d2} is queued, due now; only deferred and dead entries can be retried`],
    [[ID.d3], 1, `queue entry ${ID.d3} is held (release it with \`madmail queue release ${ID.d3}\`); only deferred and dead entries can be retried`],
    [[ID.d4], 1, `queue entry ${ID.d4} is being delivered right now; only deferred and dead entries can be retried`],
    [[ID.d6], 1, `queue entry ${ID.d6} is delivered already; only deferred and dead entries can be retried`],
    [["0jm9zzzzzzzzzzzz"], 1, 'no queue entry "0jm9zzzzzzzzzzzz"'],
    [["0jm1"], 2, expect.stringContaining('queue ID prefix "0jm1" is ambiguous')],
    [[], 2, "give exactly one of ID, --all or --domain DOMAIN"],
    [[ID.d1a, "--all"], 2, "give exactly one of ID, --all or --domain DOMAIN"],
    [["--all", "--domain", "b.example"], 2, "give exactly one of ID, --all or --domain DOMAIN"],
    [["--domain", "b..example"], 2, 'invalid domain "b..example": expected a name like chat.example.org or an IP literal'],
  ])("refuses %p", async (args, code, message) => {
    const before = dumpDb(sb.db);
    const r = await sb.run(["queue", "retry", ...args]);
    expect(r).toEqual({ code, stdout: "", stderr: typeof message === "string" ? `madmail: ${message}\n` : message });
    expect(dumpDb(sb.db)).toBe(before);
  });
});

describe("hold and release", () => {
  test("deferred -> held -> queued and due now", async () => {
    expect(await ok(["queue", "hold", ID.d1a])).toBe(`Held: ${ID.d1a} (was deferred); release it with \`madmail queue release ${ID.d1a}\`\n`);
    expect(row(ID.d1a)).toMatchObject({ state: "held", next_attempt_at: T + 20 * MIN + 30_000 });
    const before = Date.now();
    expect(await ok(["queue", "release", "0jm1aaaaaaaab001"])).toBe(`Released: ${ID.d1a} (queued, due now)\n`);
    const r = row(ID.d1a)!;
    expect(r.state).toBe("queued");
    expect(r.next_attempt_at).toBeGreaterThanOrEqual(before);
    expect(r.next_attempt_at).toBeLessThanOrEqual(Date.now());
  });

  test("releasing an entry past its lifetime says that one failure is final", async () => {
    insert([], [{ id: "0jm3ccccccccd002", msg: "0jm3cccccccccccc", domain: "f.example", rcpts: ["y@f.example"], state: "held", next: T,
      created: T - 6 * DAY, expires: T - DAY }]);
    const expired = new Date(T - DAY).toISOString().slice(0, 19).replace("T", " ");
    expect(await ok(["queue", "release", "0jm3ccccccccd002"]))
      .toBe(`Released: 0jm3ccccccccd002 (queued, due now; its lifetime ended ${expired}, so if this attempt fails it is given up)\n`);
    expect(row("0jm3ccccccccd002")).toMatchObject({ state: "queued", expires_at: T - DAY });
  });

  test("a queued entry can be held; --quiet prints nothing", async () => {
    expect(await ok(["queue", "hold", ID.d2, "--quiet"])).toBe("");
    expect(row(ID.d2)!.state).toBe("held");
  });

  test("a delivering entry whose lease ran out can be held", async () => {
    await ok(["queue", "hold", ID.d5]);
    expect(row(ID.d5)).toMatchObject({ state: "held", lease_until: null });
  });

  test.each([
    ["hold", ID.d4, 1, `queue entry ${ID.d4} is being delivered right now (claimed until ISO); try to hold it again in a moment`],
    ["hold", ID.d3, 1, `queue entry ${ID.d3} is held (release it with \`madmail queue release ${ID.d3}\`); only queued and deferred entries can be held`],
    ["hold", ID.d1b, 1, `queue entry ${ID.d1b} is dead (retry it with \`madmail queue retry ${ID.d1b}\`); only queued and deferred entries can be held`],
    ["hold", ID.d6, 1, `queue entry ${ID.d6} is delivered already; only queued and deferred entries can be held`],
    ["hold", "0jm9zzzzzzzzzzzz", 1, 'no queue entry "0jm9zzzzzzzzzzzz"'],
    ["release", ID.d1a, 1, `queue entry ${ID.d1a} is deferred, next attempt in 20m, not held`],
    ["release", ID.d2, 1, `queue entry ${ID.d2} is queued, due now, not held`],
    ["release", ID.d4, 1, `queue entry ${ID.d4} is being delivered right now, not held`],
    ["release", "0jm9zzzzzzzzzzzz", 1, 'no queue entry "0jm9zzzzzzzzzzzz"'],
    ["release", "0jm", 2, 'queue ID prefix "0jm" is too short: give at least 4 characters'],
  ])("%s %s refused", async (cmd, id, code, message) => {
    await refused(["queue", cmd, id], code, message.replace("ISO", new Date(T + 10 * MIN).toISOString()));
  });
});

describe("delete", () => {
  const messages = () => count("SELECT count(*) AS n FROM messages");
  const attemptsOf = (id: string) => count("SELECT count(*) AS n FROM delivery_attempts WHERE delivery_id = ?", id);

  test("removes the entry and its attempts; the message goes with its last entry", async () => {
    expect(attemptsOf(ID.d1a)).toBe(3);
    expect(await ok(["queue", "delete", ID.d1a])).toBe(`Deleted: ${ID.d1a} (deferred, to b.example); message 0jm1aaaaaaaaaaaa kept for 1 other entry\n`);
    expect([row(ID.d1a), attemptsOf(ID.d1a), messages()]).toEqual([null, 0, 6]);
    expect(await ok(["queue", "delete", "0jm1aaaaaaaab002"])).toBe(`Deleted: ${ID.d1b} (dead, to c.example); message 0jm1aaaaaaaaaaaa deleted too\n`);
    expect([row(ID.d1b), attemptsOf(ID.d1b), messages()]).toEqual([null, 0, 5]);
    expect(count("SELECT count(*) AS n FROM messages WHERE id = '0jm1aaaaaaaaaaaa'")).toBe(0);
    // Other entries untouched.
    expect(ids(await json(["queue", "list", "--limit", "0"]))).toEqual([ID.d2, ID.d3, ID.d4, ID.d5]);
  });

  test("held, delivered and lapsed-lease entries can be deleted", async () => {
    for (const id of [ID.d3, ID.d6, ID.d5]) await ok(["queue", "delete", id, "--quiet"]);
    expect([row(ID.d3), row(ID.d6), row(ID.d5), messages()]).toEqual([null, null, null, 3]);
  });

  test.each([
    [ID.d4, 1, `queue entry ${ID.d4} is being delivered right now (claimed until ISO); try to delete it again in a moment`],
    ["0jm9zzzzzzzzzzzz", 1, 'no queue entry "0jm9zzzzzzzzzzzz"'],
    ["0jm1", 2, expect.stringContaining('queue ID prefix "0jm1" is ambiguous')],
  ])("refuses %s", async (id, code, message) => {
    const before = dumpDb(sb.db);
    const r = await sb.run(["queue", "delete", id]);
    const expected = typeof message === "string" ? `madmail: ${message.replace("ISO", new Date(T + 10 * MIN).toISOString())}\n` : message;
    expect(r).toEqual({ code, stdout: "", stderr: expected });
    expect(dumpDb(sb.db)).toBe(before);
  });
});

describe("flush", () => {
  test("every deferred entry becomes due now; others untouched", async () => {
    insert([], [{ id: "0jm1aaaaaaaab003", msg: "0jm1aaaaaaaaaaaa", domain: "f.example", rcpts: ["x@f.example"], state: "deferred", next: T + 2 * HOUR, created: T - DAY }]);
    const others = [ID.d1b, ID.d2, ID.d3, ID.d4, ID.d5, ID.d6].map(row);
    const before = Date.now();
    expect(await ok(["queue", "flush"])).toBe("Made 2 deferred queue entries due now.\n");
    for (const id of [ID.d1a, "0jm1aaaaaaaab003"]) {
      const r = row(id)!;
      expect(r.state).toBe("deferred");
      expect(r.next_attempt_at).toBeGreaterThanOrEqual(before);
      expect(r.next_attempt_at).toBeLessThanOrEqual(Date.now());
    }
    expect([ID.d1b, ID.d2, ID.d3, ID.d4, ID.d5, ID.d6].map(row)).toEqual(others);
    expect(await json(["queue", "flush"])).toEqual({ flushed: 2, ids: [ID.d1a, "0jm1aaaaaaaab003"] });
  });

  test("nothing deferred", async () => {
    await ok(["queue", "delete", ID.d1a]);
    expect(await ok(["queue", "flush"])).toBe("Made 0 deferred queue entries due now.\n");
  });

  test("refuses arguments", async () => {
    await refused(["queue", "flush", ID.d1a], 2, "too many arguments\nRun `madmail queue flush --help` for usage.");
  });
});

describe("stats", () => {
  const HEAD = "DOMAIN     TOTAL  0-5m  5-10m  10-20m  20-40m  40-80m  80-160m  160-320m  320-640m  640m+";
  test("counts per state, pending entries per domain and age", async () => {
    expect(await ok(["queue", "stats"])).toBe([
      "STATE       COUNT",
      "queued      1",
      "deferred    1",
      "held        1",
      "delivering  2",
      "delivered   1",
      "dead        1",
      "",
      HEAD,
      "TOTAL      6      0     0      0       2       1       1        0         0         2",
      "b.example  2      0     0      0       0       0       1        0         0         1",
      "e.example  2      0     0      0       2       0       0        0         0         0",
      "c.example  1      0     0      0       0       0       0        0         0         1",
      "d.example  1      0     0      0       0       1       0        0         0         0",
      "",
    ].join("\n"));
  });

  test("JSON", async () => {
    expect(await json(["queue", "stats"])).toEqual({
      states: { queued: 1, deferred: 1, held: 1, delivering: 2, delivered: 1, dead: 1 },
      pending: 6,
      age_buckets: ["0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160-320m", "320-640m", "640m+"],
      total: { total: 6, buckets: [0, 0, 0, 2, 1, 1, 0, 0, 2] },
      domains: [
        { domain: "b.example", total: 2, buckets: [0, 0, 0, 0, 0, 1, 0, 0, 1] },
        { domain: "e.example", total: 2, buckets: [0, 0, 0, 2, 0, 0, 0, 0, 0] },
        { domain: "c.example", total: 1, buckets: [0, 0, 0, 0, 0, 0, 0, 0, 1] },
        { domain: "d.example", total: 1, buckets: [0, 0, 0, 0, 1, 0, 0, 0, 0] },
      ],
    });
  });

  test("the top 20 domains, then the others summed; JSON lists all", async () => {
    // 25 more domains, n25 with 25 entries ... n1 with 1; ages spread over the buckets.
    const dlvs: Dlv[] = [];
    for (let d = 1; d <= 25; d++) {
      for (let i = 0; i < d; i++) {
        dlvs.push({ id: `1n${String(d).padStart(2, "0")}x${String(i).padStart(11, "0")}`, msg: "0jm2bbbbbbbbbbbb", domain: `n${d}.example`,
          rcpts: [`a@n${d}.example`], state: "deferred", next: T + HOUR, created: T - i * 7 * MIN - 30_000 });
      }
    }
    insert([], dlvs);
    const out = (await ok(["queue", "stats"])).split("\n");
    const table = out.slice(out.indexOf("") + 1, -1);
    expect(table[1]).toMatch(/^TOTAL +331 /);
    expect(table.slice(2, 22).map((l) => l.split(/ +/)[0])).toEqual(Array.from({ length: 20 }, (_, i) => `n${25 - i}.example`));
    // n5 n4 n3 n2 b e n1 c d
    expect(table[22]).toMatch(/^\(9 other domains\) +21 /);
    expect(table).toHaveLength(23);
    const cols = (l: string) => l.split(/ {2,}/).slice(1).map(Number);
    const summed = table.slice(2).map(cols).reduce((a, b) => a.map((x, i) => x + b[i]!));
    expect(summed).toEqual(cols(table[1]!));
    expect(cols(table[2]!)).toEqual([25, 1, 1, 1, 3, 6, 11, 2, 0, 0]);
    const s = await json(["queue", "stats"]);
    expect(s.domains).toHaveLength(29);
    expect(s.pending).toBe(331);
  });

  test("empty queue", async () => {
    emptyQueue();
    expect(await ok(["queue", "stats"])).toBe([
      "STATE       COUNT", "queued      0", "deferred    0", "held        0", "delivering  0", "delivered   0", "dead        0", "",
      "DOMAIN  TOTAL  0-5m  5-10m  10-20m  20-40m  40-80m  80-160m  160-320m  320-640m  640m+",
      "TOTAL   0      0     0      0       0       0       0        0         0         0",
      "",
    ].join("\n"));
  });
});

test("every subcommand is listed in queue --help", async () => {
  const help = await ok(["queue", "--help"]);
  for (const c of ["list", "show", "retry", "hold", "release", "delete", "flush", "stats", "dead"]) expect(help).toMatch(new RegExp(`\\n +${c} `));
});
