// When to try again. The schedule is a list of waits (the last repeats) with ±10% jitter, so
// that a peer coming back is not hit by its whole backlog in the same second.

export function nextAttemptAt(schedule: readonly number[], tries: number, now = Date.now(), random = Math.random): number {
  const waitS = schedule[Math.min(Math.max(tries - 1, 0), schedule.length - 1)] ?? 60;
  const jitter = 1 + (random() * 0.2 - 0.1);
  return now + Math.round(waitS * 1000 * jitter);
}
