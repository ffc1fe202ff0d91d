// The DKIM signing thread (see dkim-thread.ts): the same signer as in the main thread, fed
// by messages. Its own key cache; its log lines go to the same stderr.
import { setLevel, setLogFormat } from "../log.ts";
import { loadDkimSigner, type DkimHeaderSigner } from "./dkim.ts";
import type { InitRequest, SignReply, SignRequest } from "./dkim-thread.ts";

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
  let reply: SignReply;
  try {
    reply = { id: m.id, header: await signer!.signatureFor(m.message, m.senderDomain) };
  } catch (err) {
    reply = { id: m.id, header: null, error: (err as Error).message };
  }
  postMessage(reply);
};
