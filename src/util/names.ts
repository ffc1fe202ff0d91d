// Normalisation of domain names, IP literals and addresses: one spelling per thing, so that
// rules and lookups match whatever case, trailing dot or bracket form a user typed.
import { isIP } from "node:net";
import { domainToASCII } from "node:url";

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** Lower-cased ASCII (punycode) domain without trailing dot, or null if not a valid name. */
export function normaliseDomain(input: string): string | null {
  let d = input.trim().toLowerCase();
  if (d.endsWith(".")) d = d.slice(0, -1);
  if (!d || d.length > 253) return null;
  if (/[^\x00-\x7f]/.test(d)) d = domainToASCII(d);
  if (!d) return null;
  const labels = d.split(".");
  if (!labels.every((l) => LABEL.test(l))) return null;
  // A name made only of digits and dots is a malformed IP, not a host name.
  if (labels.every((l) => /^\d+$/.test(l))) return null;
  return d;
}

/** `1.2.3.4`, `[1.2.3.4]`, `[IPv6:2001:db8::1]`, `2001:DB8::1` -> canonical IP text, else null. */
export function normaliseIp(input: string): string | null {
  let t = input.trim().toLowerCase();
  if (t.startsWith("[") && t.endsWith("]")) t = t.slice(1, -1);
  if (t.startsWith("ipv6:")) t = t.slice(5);
  // Most input is a host name: Bun's isIP tries a long IPv6 pattern on it first.
  if (!t.includes(":") && !/^[\d.]+$/.test(t)) return null;
  const kind = isIP(t);
  if (kind === 4) return t.split(".").map(Number).join(".");
  if (kind === 6) return new URL(`http://[${t}]/`).hostname.slice(1, -1);
  return null;
}

/** A domain or IP literal as used on the right of an address or as a routing key. */
export function normaliseHost(input: string): string | null {
  return normaliseIp(input) ?? normaliseDomain(input);
}

/** Host for display in a URL or host:port: IPv6 gets brackets. */
export function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** `User@Example.ORG.` -> `user@example.org`; `u@[1.2.3.4]` -> `u@1.2.3.4`. Null if invalid. */
export function normaliseAddress(input: string): string | null {
  const t = input.trim();
  const at = t.lastIndexOf("@");
  if (at <= 0 || at === t.length - 1) return null;
  const local = t.slice(0, at).toLowerCase();
  if (local.length > 64 || /[\s<>()\[\],;:\\"]/.test(local)) return null;
  const host = normaliseHost(t.slice(at + 1));
  return host ? `${local}@${host}` : null;
}

/** The domain part of a normalised address. */
export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf("@") + 1);
}
