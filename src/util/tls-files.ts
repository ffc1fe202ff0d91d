// The certificate and key of the TLS listeners (settings tls.cert, tls.key), read from their
// files and checked before use. A running server looks at the files again every minute and on
// SIGHUP: a renewed certificate (certbot and acme.sh replace the files, or the symlinks to them)
// serves new connections without a restart. A pair that does not load, or whose key does not
// match the certificate (caught between the two writes of a renewal), is refused: the server
// keeps the pair it has, says why (once per version of the files) and tries again at the next look.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { MadmailError } from "../errors.ts";

export interface TlsFiles {
  cert: string;
  key: string;
}

export interface TlsMaterial {
  /** PEM text, as read. */
  cert: string;
  key: string;
  /** Which files, at which version: see stampOf(). */
  files: TlsFiles;
  stamp: string;
  /** For logs: subject, expiry and fingerprint of the first certificate of the chain. */
  summary: string;
}

/** Changes when either file (or what a symlink points to) is replaced or rewritten. */
export function stampOf(files: TlsFiles): string {
  return [files.cert, files.key].map((f) => {
    try {
      const s = statSync(f);
      return `${f}:${s.ino}:${s.mtimeMs}:${s.size}`;
    } catch {
      return `${f}:-`;
    }
  }).join("|");
}

/**
 * Reads and checks the pair; a MadmailError("config") that names the file and the problem otherwise.
 * `stamp` must be taken before reading: a file replaced while we read shows up as a change at the next look.
 */
export function loadTlsMaterial(files: TlsFiles, stamp = stampOf(files)): TlsMaterial {
  const cert = readPem(files.cert, "tls.cert");
  const key = readPem(files.key, "tls.key");
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new MadmailError("config", `tls.cert ${files.cert} holds no PEM certificate: ${(err as Error).message}`);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new MadmailError("config", `tls.key ${files.key} holds no usable PEM private key: ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new MadmailError("config", `tls.key ${files.key} does not belong to the certificate in tls.cert ${files.cert}`);
  }
  const summary = `${x509.subject.replace(/\n/g, ", ")}, valid until ${new Date(x509.validTo).toISOString()}, sha256 ${x509.fingerprint256}`;
  return { cert, key, files, stamp, summary };
}

function readPem(path: string, setting: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new MadmailError("config", `cannot read ${setting} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export interface TlsWatch {
  /**
   * Looks at the files now; when they changed and the new pair loads, hands it to `apply`.
   * Resolves to what happened: "unchanged", "reloaded", or "refused" (the old pair stays).
   */
  check(): Promise<"unchanged" | "reloaded" | "refused">;
  stop(): void;
}

export interface TlsWatchOptions {
  /** The pair in use. */
  current: TlsMaterial;
  /** The files to use now (the settings may name new ones). */
  files(): Promise<TlsFiles>;
  /** Puts a new pair in use for new connections. */
  apply(material: TlsMaterial): Promise<void>;
  /** @default 60000 */
  intervalMs?: number;
  log: { info(msg: string): void; warn(msg: string): void };
}

/** Checks every `intervalMs` and whenever check() is called (SIGHUP); one check at a time. */
export function watchTlsFiles(o: TlsWatchOptions): TlsWatch {
  let current = o.current;
  // A refused version is reported once, not every minute until it is fixed.
  let refusedStamp: string | null = null;
  type Result = "unchanged" | "reloaded" | "refused";
  let running: Promise<Result> | null = null;
  let queued: Promise<Result> | null = null;

  async function look(): Promise<Result> {
    const files = await o.files();
    const stamp = stampOf(files);
    if (stamp === current.stamp) return "unchanged";
    let next: TlsMaterial;
    try {
      next = loadTlsMaterial(files, stamp);
      await o.apply(next);
    } catch (err) {
      if (stamp !== refusedStamp) o.log.warn(`TLS certificate not reloaded, the current one stays in use: ${(err as Error).message}`);
      refusedStamp = stamp;
      return "refused";
    }
    current = next;
    refusedStamp = null;
    o.log.info(`TLS certificate reloaded from ${files.cert}: ${next.summary}`);
    return "reloaded";
  }

  // A look already under way may have read the files before the change that prompted this
  // call: callers meanwhile share one more look after it.
  function check(): Promise<Result> {
    if (!running) {
      running = look()
        .catch((err): Result => (o.log.warn(`TLS certificate check failed: ${(err as Error).message}`), "refused"))
        .finally(() => (running = null));
      return running;
    }
    return (queued ??= running.then(() => {
      queued = null;
      return check();
    }));
  }
  const timer = setInterval(() => void check(), o.intervalMs ?? 60_000);
  timer.unref();
  return { check, stop: () => clearInterval(timer) };
}
