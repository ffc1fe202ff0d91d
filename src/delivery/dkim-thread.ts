// DKIM signing on a worker thread. A relay signs every message it sends: the canonicalisation,
// the body hash and the RSA operation take about a third of the sending server's CPU per
// message, and on one JavaScript thread they would hold up accepting and delivering. The main
// thread sends each message to the signing thread and puts the header it gets back in front.
// If the thread cannot start or dies, signing continues on the main thread (logged): mail is
// never held up or sent unsigned because of the thread.
import { log } from "../log.ts";
import type { LogFormat } from "../log.ts";
import { loadDkimSigner, prependHeader, type DkimHeaderSigner, type DkimSigner } from "./dkim.ts";

export interface InitRequest {
  type: "init";
  dataDir: string;
  logFormat: LogFormat;
  level: number;
}

export interface SignRequest {
  type: "sign";
  id: number;
  message: Uint8Array;
  senderDomain: string;
}

export interface SignReply {
  id: number;
  header: string | null;
  error?: string;
}

export interface DkimThread extends DkimSigner {
  /** Stops the thread; later and pending signatures are made on the calling thread. */
  close(): void;
}

// In the executable, a worker is found by the path its entrypoint had at build time (build.ts),
// relative to the project root; from source, by its file's URL.
const WORKER_ENTRY = import.meta.url.includes("/$bunfs/") ? "./src/delivery/dkim-worker.ts" : new URL("./dkim-worker.ts", import.meta.url).href;

/**
 * An idle signing thread must not keep the process up (the server's lifetime decides), so it is
 * unreferenced; but referenced while signatures are pending: Bun's event loop, waiting for a
 * message from an unreferenced worker, spins instead of sleeping: 0.38 ms of main-thread CPU
 * per signature unreferenced, 0.05 ms referenced (dkim.bench.ts, 8 in flight).
 */
type RefWorker = Worker & { ref(): void; unref(): void };

export function startDkimThread(dataDir: string, opts: { logFormat: LogFormat; level: number }): DkimThread {
  // Decides whether a message is signed at all, and signs when the thread is not there.
  const local: DkimHeaderSigner = loadDkimSigner(dataDir, { announce: false });
  const pending = new Map<number, { message: Uint8Array; senderDomain: string; resolve: (header: string | null) => void }>();
  let nextId = 1;
  // Started with the first message that has a key: a server that signs nothing has no thread.
  let worker: RefWorker | null = null;
  let state: "idle" | "running" | "gone" = "idle";

  // Whatever was sent to a thread that is gone is signed here instead.
  function fallBack(reason: string): void {
    if (state !== "running") return;
    state = "gone";
    worker = null;
    if (reason) log.withTag("dkim").warn(`signing thread stopped (${reason}); signing on the main thread`);
    const orphans = [...pending.values()];
    pending.clear();
    for (const p of orphans) void local.signatureFor(p.message, p.senderDomain).then(p.resolve);
  }

  function start(): RefWorker | null {
    if (state !== "idle") return worker;
    try {
      const w = new Worker(WORKER_ENTRY) as RefWorker;
      w.postMessage({ type: "init", dataDir, logFormat: opts.logFormat, level: opts.level } satisfies InitRequest);
      w.addEventListener("message", (e: MessageEvent<SignReply>) => {
        const p = pending.get(e.data.id);
        if (!p) return;
        pending.delete(e.data.id);
        if (!pending.size) w.unref();
        if (e.data.error) log.withTag("dkim").warn(`signing thread: ${e.data.error}`);
        p.resolve(e.data.header);
      });
      w.addEventListener("error", (e) => fallBack((e as ErrorEvent).message || "error"));
      w.addEventListener("close", () => fallBack("exited"));
      w.unref();
      worker = w;
      state = "running";
    } catch (err) {
      log.withTag("dkim").warn(`cannot start the signing thread (${(err as Error).message}); signing on the main thread`);
      state = "gone";
    }
    return worker;
  }

  return {
    async sign(message, senderDomain) {
      if (!(await local.hasKey(senderDomain))) return message;
      const w = start();
      if (!w) return local.sign(message, senderDomain);
      const id = nextId++;
      const header = await new Promise<string | null>((resolve) => {
        if (!pending.size) w.ref();
        pending.set(id, { message, senderDomain, resolve });
        // A copy, moved to the thread: the caller keeps its bytes (the queue's body is reused for bounces).
        const copy = new Uint8Array(message); // (Buffer#slice would share the memory)
        w.postMessage({ type: "sign", id, message: copy, senderDomain } satisfies SignRequest, [copy.buffer]);
      });
      return prependHeader(message, header);
    },
    close() {
      const w = worker;
      fallBack("");
      state = "gone";
      w?.terminate();
    },
  };
}
