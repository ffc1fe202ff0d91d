// One error vocabulary for every door. A MadmailError's message already says what went
// wrong and, where useful, what to run next; the code decides the exit status.

export type ErrorCode =
  | "usage" // bad input on the command line: exit 2, nothing changed
  | "not_found" // the named thing does not exist: exit 1
  | "conflict" // it exists already, or something depends on it: exit 1
  | "config" // the configuration cannot work (bad URL in a setting, 401 from a partner): exit 1
  | "schema" // the state file cannot be used by this binary: exit 1
  | "temporary"; // try again later (network, lock, 5xx): exit 75

const exitCodes: Record<ErrorCode, number> = {
  usage: 2,
  not_found: 1,
  conflict: 1,
  config: 1,
  schema: 1,
  temporary: 75,
};

export class MadmailError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MadmailError";
    this.code = code;
  }
  get exitCode(): number {
    return exitCodes[this.code];
  }
}

export const usageError = (message: string) => new MadmailError("usage", message);
export const notFound = (message: string) => new MadmailError("not_found", message);
export const conflict = (message: string) => new MadmailError("conflict", message);
