// MX resolution per RFC 5321 §5.1: MX hosts by preference; no MX -> the domain's own address
// (implicit MX); a null MX (RFC 7505: one record, exchange ".") -> the domain takes no mail.
// Bun reports a name without MX records as ENOTFOUND, the same code as a name that does not
// exist (Node says ENODATA), so the address lookup decides in both cases.
import { promises as dns } from "node:dns";

export type MxResult =
  | { kind: "hosts"; hosts: string[]; implicit: boolean }
  | { kind: "none"; reason: string } // permanent: null MX or no such domain
  | { kind: "error"; reason: string }; // temporary: DNS failure

const NOT_FOUND = new Set(["ENOTFOUND", "ENODATA", "NXDOMAIN"]);

export async function resolveMxHosts(domain: string, resolver: Pick<typeof dns, "resolveMx" | "resolve4" | "resolve6"> = dns): Promise<MxResult> {
  let records: { exchange: string; priority: number }[] = [];
  try {
    records = await resolver.resolveMx(domain);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    if (!NOT_FOUND.has(code)) return { kind: "error", reason: `MX lookup for ${domain} failed: ${code || (err as Error).message}` };
  }
  if (records.length === 1 && (records[0]!.exchange === "" || records[0]!.exchange === ".")) {
    return { kind: "none", reason: `${domain} publishes a null MX: it accepts no mail` };
  }
  if (records.length) {
    const hosts = records.sort((a, b) => a.priority - b.priority).map((r) => r.exchange.replace(/\.$/, "").toLowerCase());
    return { kind: "hosts", hosts: [...new Set(hosts)], implicit: false };
  }
  // Implicit MX: the domain itself, if it has an address.
  const found = await Promise.allSettled([resolver.resolve4(domain), resolver.resolve6(domain)]);
  if (found.some((r) => r.status === "fulfilled" && r.value.length)) return { kind: "hosts", hosts: [domain], implicit: true };
  const codes = found.map((r) => (r.status === "rejected" ? ((r.reason as NodeJS.ErrnoException).code ?? "") : "EMPTY"));
  if (codes.every((c) => NOT_FOUND.has(c) || c === "EMPTY")) return { kind: "none", reason: `${domain} has no MX and no address (${codes[0]})` };
  return { kind: "error", reason: `address lookup for ${domain} failed: ${codes.join(", ")}` };
}
