// Recipient and sender details shared by the pipeline and the doors.

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
