// A raw SMTP/LMTP client for tests: exact bytes on the wire, replies parsed per line, so
// tests can assert codes and probe smuggling sequences no real client would send.
import { connect, type Socket } from "node:net";

export interface Reply {
  code: number;
  lines: string[];
  text: string;
}

export class RawSmtp {
  private buf = "";
  private waiters: (() => void)[] = [];
  private closed = false;
  /** Every read from the socket as it came: how the server's replies were packed. */
  readonly chunks: string[] = [];
  private constructor(private sock: Socket) {
    sock.setEncoding("latin1");
    sock.on("data", (d: string) => {
      this.chunks.push(d);
      this.buf += d;
      this.waiters.splice(0).forEach((w) => w());
    });
    sock.on("close", () => {
      this.closed = true;
      this.waiters.splice(0).forEach((w) => w());
    });
  }

  static async open(port: number, host = "127.0.0.1"): Promise<{ client: RawSmtp; greeting: Reply }> {
    const sock = connect(port, host);
    await new Promise<void>((res, rej) => sock.once("connect", res).once("error", rej));
    const client = new RawSmtp(sock);
    return { client, greeting: await client.reply() };
  }

  /** Next complete reply (multi-line replies end with "NNN "). */
  async reply(timeoutMs = 10_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*(\d{3}) [^\n]*\n/.exec(this.buf);
      if (m) {
        const raw = m[0];
        this.buf = this.buf.slice(raw.length);
        const lines = raw.trimEnd().split(/\r?\n/);
        return { code: Number(m[1]), lines, text: lines.map((l) => l.slice(4)).join("\n") };
      }
      if (this.closed) throw new Error(`connection closed; pending: ${JSON.stringify(this.buf)}`);
      if (Date.now() > deadline) throw new Error(`no reply; pending: ${JSON.stringify(this.buf)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  write(data: string | Uint8Array): void {
    this.sock.write(data);
  }

  async cmd(line: string): Promise<Reply> {
    this.write(line + "\r\n");
    return this.reply();
  }

  /** Sends DATA, the body (dot-stuffed, CRLF-terminated) and the final dot. */
  async data(body: string | Uint8Array, replies = 1): Promise<Reply[]> {
    const r = await this.cmd("DATA");
    if (r.code !== 354) return [r];
    const text = typeof body === "string" ? body : Buffer.from(body).toString("latin1");
    const stuffed = text.replace(/\r?\n/g, "\r\n").replace(/^\./gm, "..");
    this.write(Buffer.from(stuffed + (stuffed.endsWith("\r\n") ? "" : "\r\n") + ".\r\n", "latin1"));
    const out: Reply[] = [];
    for (let i = 0; i < replies; i++) out.push(await this.reply());
    return out;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** One whole transaction: EHLO/LHLO, MAIL, RCPTs, DATA. Returns every reply. */
export async function sendMail(port: number, opts: { lmtp?: boolean; from: string; to: string[]; body: string | Uint8Array; mailParams?: string }) {
  const { client, greeting } = await RawSmtp.open(port);
  try {
    const ehlo = await client.cmd(`${opts.lmtp ? "LHLO" : "EHLO"} test.client`);
    const mail = await client.cmd(`MAIL FROM:<${opts.from}>${opts.mailParams ? " " + opts.mailParams : ""}`);
    const rcpts: Reply[] = [];
    for (const t of opts.to) rcpts.push(await client.cmd(`RCPT TO:<${t}>`));
    const accepted = rcpts.filter((r) => r.code < 300).length;
    const data = accepted ? await client.data(opts.body, opts.lmtp ? accepted : 1) : [];
    await client.cmd("QUIT").catch(() => undefined);
    return { greeting, ehlo, mail, rcpts, data };
  } finally {
    client.close();
  }
}
