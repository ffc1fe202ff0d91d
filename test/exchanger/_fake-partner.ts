// A fake exchanger partner (Bun.serve on 127.0.0.1:0) speaking the pull protocol from the
// client's point of view: madmail (GET /exchanger/pull, POST /exchanger/ack) and the lenient
// madexchanger shape (GET /pull?domain=D, POST /pull/ack). Messages are leased when handed out
// and offered again after the lease unless acknowledged, like the real endpoint.
import type { Server } from "bun";

export interface HeldMessage {
  id: string;
  mail_from: string;
  rcpt_to: string[];
  body: string | Uint8Array;
  /** madexchanger: the domain this message is pulled under. */
  domain?: string;
}

export interface FakePartnerOptions {
  token?: string;
  /** Answer every pull with this status (and a small body) instead of mail. */
  status?: number;
  /** Answer pulls with this text (200) instead of JSON. */
  rawAnswer?: string;
  /** Delay every pull answer by this long. */
  delayMs?: number;
  /** @default 300000 */
  leaseMs?: number;
  /** Pretend to take acks (200) but keep the messages. */
  ignoreAcks?: boolean;
  /** madexchanger answers: a bare array instead of {messages} for these domains. */
  bareArrayFor?: string[];
  /** Serve HTTPS with this certificate and key (PEM text). */
  tls?: { cert: string; key: string };
}

export interface FakePartner {
  url: string;
  opts: FakePartnerOptions;
  held: Map<string, HeldMessage & { leasedUntil: number }>;
  /** Every pull request: query and whether it was authorised. */
  pulls: { path: string; wait: number | null; max: number | null; domain: string | null; auth: string | null }[];
  /** Ids of every ack call, in order. */
  acks: string[][];
  /** The `refused` object of every ack call that had one. */
  refusals: Record<string, { address: string; status: string; diagnostic: string }[]>[];
  /** Pulls whose connection the client closed before the answer. */
  abortedPulls: number;
  add(...messages: HeldMessage[]): void;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function fakePartner(opts: FakePartnerOptions = {}): FakePartner {
  const token = opts.token ?? "tok-123";
  const partner: FakePartner = {
    url: "",
    opts,
    held: new Map(),
    pulls: [],
    acks: [],
    refusals: [],
    abortedPulls: 0,
    add(...messages) {
      for (const m of messages) partner.held.set(m.id, { ...m, leasedUntil: 0 });
    },
    async stop() {
      await server.stop(true);
    },
  };
  const available = (domain: string | null) =>
    [...partner.held.values()].filter((m) => m.leasedUntil <= Date.now() && (domain === null || m.domain === domain));
  const b64 = (b: string | Uint8Array) => Buffer.from(b).toString("base64");

  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 120,
    ...(opts.tls ? { tls: opts.tls } : {}),
    async fetch(req) {
      const url = new URL(req.url);
      const auth = req.headers.get("authorization");
      const madmail = url.pathname.startsWith("/exchanger/");
      if (req.method === "GET" && (url.pathname === "/exchanger/pull" || url.pathname === "/pull")) {
        const q = (k: string) => url.searchParams.get(k);
        partner.pulls.push({ path: url.pathname, wait: q("wait") === null ? null : Number(q("wait")), max: q("max") === null ? null : Number(q("max")), domain: q("domain"), auth });
        if (auth !== `Bearer ${token}`) return Response.json({ error: "unauthorized" }, { status: 401 });
        if (opts.delayMs) await sleep(opts.delayMs);
        if (opts.status) return new Response(`status ${opts.status}`, { status: opts.status });
        if (opts.rawAnswer !== undefined) return new Response(opts.rawAnswer, { status: 200 });
        const domain = madmail ? null : q("domain");
        const deadline = Date.now() + Math.min(60, Number(q("wait") ?? 0)) * 1000;
        while (!available(domain).length && Date.now() < deadline && !req.signal.aborted) await sleep(20);
        if (req.signal.aborted) {
          partner.abortedPulls++;
          return new Response("gone", { status: 499 });
        }
        const max = madmail ? Number(q("max") ?? 50) : 3;
        const all = available(domain);
        const batch = all.slice(0, max);
        for (const m of batch) m.leasedUntil = Date.now() + (opts.leaseMs ?? 300_000);
        if (madmail) {
          return Response.json({
            messages: batch.map((m) => ({
              id: m.id, mail_from: m.mail_from, rcpt_to: m.rcpt_to, size: Buffer.from(m.body).length,
              queued_at: new Date().toISOString(), body_base64: b64(m.body),
            })),
            more: all.length > batch.length,
          });
        }
        // madexchanger: other field names, numeric ids where they look numeric, comma lists.
        const items = batch.map((m) => ({ id: /^\d+$/.test(m.id) ? Number(m.id) : m.id, from: m.mail_from, to: m.rcpt_to.join(","), data: b64(m.body) }));
        return Response.json(opts.bareArrayFor?.includes(domain ?? "") ? items : { messages: items });
      }
      if (req.method === "POST" && (url.pathname === "/exchanger/ack" || url.pathname === "/pull/ack")) {
        if (auth !== `Bearer ${token}`) return Response.json({ error: "unauthorized" }, { status: 401 });
        const { ids, refused } = (await req.json()) as { ids: string[]; refused?: FakePartner["refusals"][number] };
        partner.acks.push(ids);
        if (refused) partner.refusals.push(refused);
        let acked = 0;
        if (!opts.ignoreAcks) {
          for (const id of ids) {
            // madexchanger acks carry the ids as we got them (numbers become strings).
            if (partner.held.delete(String(id))) acked++;
          }
        }
        return Response.json({ acked });
      }
      return new Response("not found", { status: 404 });
    },
  });
  partner.url = `${opts.tls ? "https" : "http"}://127.0.0.1:${server.port}`;
  return partner;
}
