// defineCommand plus examples for --help. Examples are plain shell lines.
import { defineCommand, type ArgsDef, type CommandDef } from "citty";

export type MadmailCommand = CommandDef<any> & { examples?: string[] };

export function command<const T extends ArgsDef = ArgsDef>(def: CommandDef<T> & { examples?: string[] }): CommandDef<T> {
  return defineCommand(def);
}
