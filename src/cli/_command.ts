// defineCommand plus examples and details for --help. Examples are plain shell lines.
import { defineCommand, type ArgsDef, type CommandDef } from "citty";

/**
 * `details`: paragraphs shown under the command's own --help, after its options. The one-line
 * `meta.description` is also what the parent's command list shows, so it stays short.
 */
export type MadmailCommand = CommandDef<any> & { examples?: string[]; details?: string[] };

export function command<const T extends ArgsDef = ArgsDef>(def: CommandDef<T> & { examples?: string[]; details?: string[] }): CommandDef<T> {
  return defineCommand(def);
}
