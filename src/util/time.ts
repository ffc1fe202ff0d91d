/** ISO 8601 in UTC for output; null stays null (printed as `never` by tables). */
export function isoTime(ms: number | null | undefined): string | null {
  return ms == null ? null : new Date(ms).toISOString();
}

/** Compact human time for tables: 2026-11-21 12:04:05 (UTC). */
export function tableTime(ms: number | null | undefined, empty = "never"): string {
  return ms == null ? empty : new Date(ms).toISOString().slice(0, 19).replace("T", " ");
}
