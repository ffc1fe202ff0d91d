// citty does not export its error class; its errors carry name "CLIError" and a code.
export type { ArgsDef, CommandDef } from "citty";

export class CLIError extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.name = "CLIError";
    this.code = code;
  }
}
