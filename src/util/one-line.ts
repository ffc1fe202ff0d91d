// One line of text out of any: for tables, logs and stored errors that must stay one row.

/**
 * Remote servers write error texts and senders write headers: control characters (a terminal
 * escape in an SMTP reply) never reach the terminal. One line, cut to `max` characters.
 */
export function oneLine(text: string, max: number): string {
  const flat = text.replace(/[\x00-\x1f\x7f-\x9f]+/g, " ").replace(/ {2,}/g, " ").trim();
  return flat.length > max ? flat.slice(0, max - 3) + "..." : flat;
}
