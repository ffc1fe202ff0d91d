import { command } from "../_command.ts";

const leaf = (file: "list" | "write", name: string) => () =>
  (file === "list" ? import("./list.ts") : import("./write.ts")).then((m) => m.default[name]!);

export default command({
  meta: { name: "queue", description: "Look at and manage the outbound queue (as postqueue, postsuper and qshape do)" },
  subCommands: {
    list: leaf("list", "list"),
    show: () => import("./show.ts").then((m) => m.default),
    retry: leaf("write", "retry"),
    hold: leaf("write", "hold"),
    release: leaf("write", "release"),
    delete: leaf("write", "delete"),
    flush: leaf("write", "flush"),
    stats: () => import("./stats.ts").then((m) => m.default),
    dead: leaf("list", "dead"),
  },
  examples: [
    "madmail queue list --state deferred",
    "madmail queue show 0jm3k2x9c4r7hq2d",
    "madmail queue retry --domain b.example",
    "madmail queue stats",
  ],
});
