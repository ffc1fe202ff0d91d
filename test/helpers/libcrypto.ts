// Whether this host has OpenSSL 3's libcrypto where madmail's DKIM signer looks for it
// (src/delivery/rsa-sign.ts): tests expect the OpenSSL path exactly then.
import { existsSync } from "node:fs";

export const HAS_LIBCRYPTO = [
  "/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "/usr/lib/aarch64-linux-gnu/libcrypto.so.3", "/usr/lib/libcrypto.so.3", "/lib64/libcrypto.so.3",
].some(existsSync);
