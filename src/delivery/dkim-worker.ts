// The DKIM signing thread (see dkim-thread.ts): the same signer as in the main thread, fed
// by messages. Its own key cache; its log lines go to the same stderr.
import { setLevel, setLogFormat } from "../log.ts";
import { loadDkimSigner, type DkimHeaderSigner } from "./dkim.ts";
import type { InitRequest, SignReplies, SignReply, SignRequest } from "./dkim-thread.ts";

declare const self: Worker;

let signer: DkimHeaderSigner | null = null;

self.onmessage = async (e: MessageEvent<SignRequest | InitRequest>) => {
  const m = e.data;
  if (m.type === "init") {
    setLogFormat(m.logFormat);
    setLevel(m.level);
    signer = loadDkimSigner(m.dataDir);
    return;
  }
  // One reply per signature, sent as soon as it is made: the deliveries waiting for the
  // rest of the batch must not hold up the ones whose header is ready.
  for (const item of m.items) {
    let reply: SignReply;
    try {
      reply = { id: item.id, header: await signer!.signatureFor(item.message, item.senderDomain) };
    } catch (err) {
      reply = { id: item.id, header: null, error: (err as Error).message };
    }
    postMessage({ replies: [reply] } satisfies SignReplies);
  }
};
