// Recipient and sender details shared by the pipeline and the doors.
import addressparser from "nodemailer/lib/addressparser";
import { readHeaders } from "../policy/mime-structure.ts";
import { normaliseAddress } from "../util/names.ts";

/** Local parts that never get mail from outside (chatmail reserves them). */
export const RESERVED_LOCAL_PARTS = new Set(["admin", "root", "postmaster", "mailer-daemon", "abuse", "hostmaster", "webmaster"]);

export function isReservedLocalPart(address: string): boolean {
  return RESERVED_LOCAL_PARTS.has(address.slice(0, address.lastIndexOf("@")));
}

/** Domain of the first address in the From: header, read from the header block only. */
export function headerFromDomain(body: Uint8Array): string | null {
  const head = new TextDecoder("latin1").decode(body.subarray(0, Math.min(body.length, 16384)));
  const end = head.search(/\r?\n\r?\n/);
  const headers = (end >= 0 ? head.slice(0, end) : head).replace(/\r?\n[ \t]+/g, " ");
  const m = /^from:[^\n]*?([^\s<>"@,;]+)@([a-z0-9.\-\[\]:]+)/im.exec(headers);
  return m ? m[2]!.toLowerCase().replace(/^\[|\]$/g, "") : null;
}

/**
 * The addresses of the From: header, normalised; null when there is none, it occurs more than
 * once, or an address in it does not parse (each of these is refused where it matters).
 */
export function headerFromAddresses(body: Uint8Array): string[] | null {
  const block = readHeaders(body, 0, body.length, ["from"]);
  if (typeof block === "string") return null;
  let value = block.values[0];
  if (typeof value !== "string") return null;
  // The block reader decodes single bytes; an address in UTF-8 (RFC 6532) is read again as such.
  if (/[^\x00-\x7f]/.test(value)) {
    const head = new TextDecoder().decode(block.bodyStart >= 0 ? body.subarray(0, block.bodyStart) : body);
    value = /^from[ \t]*:(.*(?:\r?\n[ \t].*)*)/im.exec(head)?.[1]?.replace(/\r?\n/g, "") ?? value;
  }
  const out: string[] = [];
  for (const a of addressparser(value, { flatten: true })) {
    const n = normaliseAddress(a.address ?? "");
    if (!n) return null;
    out.push(n);
  }
  return out.length ? out : null;
}
