// Data goes to stdout (tables or one JSON document); everything else to stderr.

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

/** Prints an aligned table with a header row; cells are left-aligned, the last is not padded. */
export function printTable(headers: string[], rows: string[][]): void {
  // A tab or line break in a cell (a comment, a peer's error text) would break the columns.
  rows = rows.map((r) => r.map((c) => c.replace(/[\x00-\x1f\x7f-\x9f]+/g, " ")));
  // Columns as a terminal shows them: a CJK character takes two, a combining mark none.
  const width = (c: string) => Bun.stringWidth(c);
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ""))));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c + " ".repeat(Math.max(0, widths[i]! - width(c))))).join("  ").trimEnd();
  process.stdout.write([line(headers), ...rows.map(line)].join("\n") + "\n");
}

/** A confirmation for humans; suppressed by --quiet. */
export function say(args: { quiet?: boolean }, message: string): void {
  if (!args.quiet) process.stdout.write(message + "\n");
}
