// Human sizes and durations, as sysadmins write them in configs: 30M, 1G, 10m, 7d.

const sizeUnits: Record<string, number> = { "": 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Parses `500`, `500K`, `30M`, `1G`, `1.5G` (binary multiples). Returns bytes or null. */
export function parseSize(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) return null;
  const bytes = Math.round(Number(m[1]) * sizeUnits[m[2]!.toUpperCase()]!);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

export function formatSize(bytes: number): string {
  for (const unit of ["T", "G", "M", "K"]) {
    const mult = sizeUnits[unit]!;
    if (bytes >= mult && bytes % mult === 0) return `${bytes / mult}${unit}`;
  }
  return String(bytes);
}

const durationUnits: Record<string, number> = { "": 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Parses `90`, `90s`, `10m`, `1h`, `7d`, `2w`. Returns seconds or null. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)\s*([smhdw]?)$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * durationUnits[m[2]!]!;
}

export function formatDuration(seconds: number): string {
  for (const unit of ["w", "d", "h", "m"]) {
    const mult = durationUnits[unit]!;
    if (seconds >= mult && seconds % mult === 0) return `${seconds / mult}${unit}`;
  }
  return `${seconds}s`;
}
