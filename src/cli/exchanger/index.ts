import { command } from "../_command.ts";

const leaf = (name: string) => () => import("./write.ts").then((m) => m.default[name]!);

export default command({
  meta: { name: "exchanger", description: "Manage exchangers: trusted servers that carry mail for us (push or pull)" },
  subCommands: {
    list: () => import("./list.ts").then((m) => m.default),
    status: () => import("./status.ts").then((m) => m.default),
    add: leaf("add"),
    set: leaf("set"),
    enable: leaf("enable"),
    disable: leaf("disable"),
    remove: leaf("remove"),
    token: leaf("token"),
  },
  examples: [
    "madmail exchanger add relay1 https://relay1.example --domains b.example,c.example",
    "madmail exchanger add hub https://hub.example --mode pull --poll-interval 30",
    "madmail exchanger list",
  ],
});
