// The few C library calls Bun does not offer: flock(2) for locks that the kernel drops when
// their process ends, and setenv(3) for settings that native code reads from the C environment.
// Loaded once, through bun:ffi; null where no known C library can be loaded (then callers fall
// back and say so).

export interface Libc {
  flock(fd: number, op: number): number;
  /** errno as left by the last call. */
  errno(): number;
  setenv(name: string, value: string, overwrite: boolean): number;
}

export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const EWOULDBLOCK = 11;

// glibc, then musl (Alpine) on the two architectures Bun builds for.
const NAMES = ["libc.so.6", "libc.musl-x86_64.so.1", "libc.musl-aarch64.so.1"];

let libc: Libc | null | undefined;

export function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== "linux") return libc;
  const { dlopen, FFIType: T, read } = require("bun:ffi") as typeof import("bun:ffi");
  for (const name of NAMES) {
    try {
      const lib = dlopen(name, {
        flock: { args: [T.i32, T.i32], returns: T.i32 },
        __errno_location: { args: [], returns: T.ptr },
        setenv: { args: [T.cstring, T.cstring, T.i32], returns: T.i32 },
      });
      const s = lib.symbols;
      libc = {
        flock: (fd, op) => s.flock(fd, op),
        errno: () => {
          const p = s.__errno_location();
          return p ? read.i32(p, 0) : -1;
        },
        setenv: (n, v, overwrite) => s.setenv(Buffer.from(`${n}\0`), Buffer.from(`${v}\0`), overwrite ? 1 : 0),
      };
      return libc;
    } catch {
      // not this one
    }
  }
  return libc;
}
