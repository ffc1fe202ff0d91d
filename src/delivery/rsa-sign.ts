// The RSA private-key operation of DKIM (RSASSA-PKCS1-v1_5 with SHA-256). Bun's crypto is
// BoringSSL without the vector code OpenSSL 3 has for RSA: on the AMD EPYC hosts this was
// measured on, a 2048-bit signature costs 0.58-0.69 ms in Bun and 0.25 ms in the system's
// libcrypto — on a relay that signs every message, the largest single cost per message
// (test/bench/floor.bench.ts). So the system's OpenSSL signs when it can be loaded (bun:ffi),
// and WebCrypto otherwise. PKCS#1 v1.5 signatures are deterministic: both give the same bytes
// (tested), so the choice changes the CPU spent, never the output.
// MADMAIL_DKIM_OPENSSL=0 turns the OpenSSL path off.
import type { KeyObject } from "node:crypto";
import { log } from "../log.ts";

export interface RsaSigningKey {
  readonly backend: "openssl" | "webcrypto";
  /** The signature over `data` (SHA-256 is computed here). */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export async function importRsaSigningKey(key: KeyObject): Promise<RsaSigningKey> {
  const ssl = await usableOpenssl();
  if (ssl) {
    try {
      return ssl.importKey(key);
    } catch (err) {
      log.withTag("dkim").warn(`OpenSSL could not load the key, signing with WebCrypto: ${(err as Error).message}`);
    }
  }
  const webKey = await crypto.subtle.importKey("pkcs8", key.export({ type: "pkcs8", format: "der" }),
    { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["sign"]);
  return {
    backend: "webcrypto",
    async sign(data) {
      return new Uint8Array(await crypto.subtle.sign("RSASSA-PKCS1-v1_5", webKey, data as Uint8Array<ArrayBuffer>));
    },
  };
}

/** What signs on this host: "openssl" when libcrypto.so.3 loads and MADMAIL_DKIM_OPENSSL is not 0. */
export async function rsaBackend(): Promise<RsaSigningKey["backend"]> {
  return (await usableOpenssl()) ? "openssl" : "webcrypto";
}

/** The system's OpenSSL unless MADMAIL_DKIM_OPENSSL=0 turns it off. */
async function usableOpenssl(): Promise<OpenSsl | null> {
  return process.env.MADMAIL_DKIM_OPENSSL === "0" ? null : openssl();
}

interface OpenSsl {
  importKey(key: KeyObject): RsaSigningKey;
}

let loaded: Promise<OpenSsl | null> | undefined;

/** The system's libcrypto (OpenSSL 3), or null when it cannot be loaded here. */
function openssl(): Promise<OpenSsl | null> {
  loaded ??= (async () => {
    const { dlopen, FFIType: T, ptr } = await import("bun:ffi");
    const symbols = {
      BIO_new_mem_buf: { args: [T.ptr, T.i32], returns: T.ptr },
      BIO_free: { args: [T.ptr], returns: T.i32 },
      PEM_read_bio_PrivateKey: { args: [T.ptr, T.ptr, T.ptr, T.ptr], returns: T.ptr },
      EVP_PKEY_free: { args: [T.ptr], returns: T.void },
      EVP_PKEY_get_size: { args: [T.ptr], returns: T.i32 },
      EVP_MD_CTX_new: { args: [], returns: T.ptr },
      EVP_MD_CTX_free: { args: [T.ptr], returns: T.void },
      EVP_sha256: { args: [], returns: T.ptr },
      EVP_DigestSignInit: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
      EVP_DigestSign: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.u64], returns: T.i32 },
    } as const;
    let lib: ReturnType<typeof dlopen<typeof symbols>> | undefined;
    for (const name of ["libcrypto.so.3", "libcrypto.3.dylib"]) {
      try {
        lib = dlopen(name, symbols);
        break;
      } catch {
        // not here; try the next name, else WebCrypto
      }
    }
    if (!lib) return null;
    const f = lib.symbols;
    const sha256 = f.EVP_sha256();
    // The EVP_PKEY lives as long as its JavaScript handle: a signature still being computed
    // for an old key after `dkim generate --force` keeps it alive.
    const keys = new FinalizationRegistry<number>((pkey) => f.EVP_PKEY_free(pkey as never));
    return {
      importKey(key: KeyObject): RsaSigningKey {
        const pem = Buffer.from(key.export({ type: "pkcs8", format: "pem" }) as string);
        const bio = f.BIO_new_mem_buf(ptr(pem), pem.length);
        if (!bio) throw new Error("BIO_new_mem_buf failed");
        const pkey = f.PEM_read_bio_PrivateKey(bio, null, null, null);
        f.BIO_free(bio);
        pem.fill(0);
        if (!pkey) throw new Error("PEM_read_bio_PrivateKey failed");
        const size = f.EVP_PKEY_get_size(pkey);
        const handle: RsaSigningKey = {
          backend: "openssl",
          async sign(data) {
            const ctx = f.EVP_MD_CTX_new();
            if (!ctx) throw new Error("EVP_MD_CTX_new failed");
            try {
              const sig = new Uint8Array(size);
              const len = new BigUint64Array([BigInt(size)]);
              // A zero-length input still needs a valid address to pass.
              const input = data.byteLength ? data : new Uint8Array(1);
              if (f.EVP_DigestSignInit(ctx, null, sha256, null, pkey) !== 1 ||
                  f.EVP_DigestSign(ctx, ptr(sig), ptr(len), ptr(input), data.byteLength) !== 1) {
                throw new Error("OpenSSL EVP_DigestSign failed");
              }
              return sig.subarray(0, Number(len[0]));
            } finally {
              f.EVP_MD_CTX_free(ctx);
            }
          },
        };
        keys.register(handle, Number(pkey));
        return handle;
      },
    };
  })().catch((err: unknown) => {
    log.withTag("dkim").debug(`system OpenSSL not usable, signing with WebCrypto: ${(err as Error).message}`);
    return null;
  });
  return loaded;
}
