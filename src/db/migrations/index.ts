// Inline migration list: a compiled binary has no folder to scan. Append only.
import type { Kysely } from "kysely";
import * as m0001 from "./0001_foundation.ts";
import * as m0002 from "./0002_inbound.ts";
import * as m0003 from "./0003_queue.ts";
import * as m0004 from "./0004_exchanger_pull.ts";
import * as m0005 from "./0005_delivery_id_pending.ts";
import * as m0006 from "./0006_delivery_id_queued.ts";

export interface Migration {
  name: string;
  up(db: Kysely<any>): Promise<void>;
}

export const migrations: readonly Migration[] = [
  { name: "0001_foundation", up: m0001.up },
  { name: "0002_inbound", up: m0002.up },
  { name: "0003_queue", up: m0003.up },
  { name: "0004_exchanger_pull", up: m0004.up },
  { name: "0005_delivery_id_pending", up: m0005.up },
  { name: "0006_delivery_id_queued", up: m0006.up },
];
