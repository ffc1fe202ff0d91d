// Whether a process id names a running process (lock files record their holder's pid).

/** kill(pid, 0): true when it exists, also when it belongs to another user (EPERM). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
