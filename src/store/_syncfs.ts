// syncfs(2) through coreutils' `sync -f PATH`: one call makes every file written on that file
// system durable (data, inodes, directory entries) and flushes the disk cache. Node and Deno
// have no binding for it; the process costs ~1-2 ms, paid once per batch of deliveries.
import { execFile } from "node:child_process";

export function syncFilesystem(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile("sync", ["-f", path], { timeout: 60_000 }, (err, _out, stderr) => {
      if (err) reject(new Error(`sync -f ${path} failed: ${stderr.toString().trim() || err.message}`, { cause: err }));
      else resolve();
    });
  });
}

let probed: Promise<boolean> | undefined;

/** Whether `sync -f` works here (coreutils >= 8.24 on Linux); checked once. */
export function canSyncFilesystem(path: string): Promise<boolean> {
  probed ??= syncFilesystem(path).then(() => true, () => false);
  return probed;
}
