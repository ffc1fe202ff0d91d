import { command } from "./_command.ts";
import { commonArgs, repeatedFlag } from "./_args.ts";
import { existingDb } from "./_db.ts";
import { printJson } from "./_output.ts";
import { MadmailError, usageError } from "../errors.ts";
import { normaliseAddress } from "../util/names.ts";
import { smtpReplyFor } from "../inbound/replies.ts";
import { setLevel } from "../log.ts";

export default command({
  meta: { name: "send", description: "Send a message from standard input through the accept pipeline; prints the queue ids" },
  details: ["For scripts on this host: the message goes through the same checks as submission (the encryption gate included), " +
    "as the local sender given with --from and without AUTH. One queue id is printed per destination domain."],
  args: {
    from: { type: "string", required: true, valueHint: "ADDRESS", description: "Envelope sender: an address at a local domain" },
    to: { type: "string", required: true, valueHint: "ADDRESS", description: "Recipient; repeat --to or give a comma list for several" },
    json: { type: "boolean", description: "Print the result as JSON" },
    ...commonArgs,
  },
  examples: [
    "madmail send --from alice@chat.example --to bob@other.example < message.eml",
    "madmail send --from alice@chat.example --to a@x.example --to b@y.example --json < message.eml",
  ],
  async run({ args, rawArgs }) {
    // citty keeps only the last of a repeated flag: collect every --to ourselves.
    const to = repeatedFlag(rawArgs, "--to").flatMap((v) => v.split(",")).map((s) => s.trim()).filter(Boolean);
    if (!to.length) throw usageError("no recipient: --to needs an address");
    const bad = [args.from, ...to].find((a) => !normaliseAddress(a));
    if (bad !== undefined) throw usageError(`invalid address "${bad}": expected user@domain`);
    const body = new Uint8Array(await new Response(process.stdin as unknown as ReadableStream).arrayBuffer());
    if (!body.length) throw usageError("no message on standard input");
    // The pipeline's log line is for servers; a script wants only the queue id (or the error).
    setLevel(args.quiet ? 0 : 1);
    return existingDb(args, async (state) => {
      const { openCore } = await import("../server.ts");
      const core = await openCore(state);
      const snap = await core.snapshot.get();
      const from = normaliseAddress(args.from)!;
      if (!snap.localDomains.has(from.slice(from.lastIndexOf("@") + 1))) {
        throw usageError(`--from ${from} is not at a local domain (see \`madmail domain list\`)`);
      }
      const result = await core.acceptor.accept({ door: "send", peer: "local", mailFrom: from, rcpts: to, body });
      await core.writes.drain();
      await core.store.dispose();
      const rows = to.map((address, i) => ({ address, verdict: result.rcpts[i]!.verdict, reply: `${smtpReplyFor(result.rcpts[i]!).code} ${smtpReplyFor(result.rcpts[i]!).text}` }));
      const ids = result.queued?.deliveryIds ?? [];
      if (args.json) printJson({ message_id: result.queued?.messageId ?? null, queue_ids: ids, recipients: rows });
      else {
        // One queue id per destination domain, as `madmail queue show ID` takes them.
        if (ids.length) process.stdout.write(ids.join("\n") + "\n");
        for (const r of rows) if (r.verdict !== "accept") process.stderr.write(`${r.address}: ${r.reply}\n`);
      }
      const refused = result.rcpts.filter((v) => v.verdict === "reject" || v.verdict === "tempfail");
      if (refused.length === result.rcpts.length) {
        const temp = result.rcpts.some((v) => v.verdict === "tempfail");
        throw new MadmailError(temp ? "temporary" : "conflict", `message refused for every recipient`);
      }
    });
  },
});

