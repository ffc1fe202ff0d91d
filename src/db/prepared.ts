// Queries built and compiled once. Kysely builds and compiles a query anew on every call, 4 to
// 12 µs each, and a relayed message runs about ten on the two servers it passes: a measurable
// share of their CPU. A prepared query is built on first use with markers in place of its
// parameters; later calls run the same SQL text with the values put where the markers were.
// Only for queries whose shape does not depend on the values (no IN lists of varying length,
// no optional columns): the shape is fixed by that first build.
import type { CompiledQuery, Compilable, Kysely, QueryResult } from "kysely";
import type { Database } from "./schema.ts";

const MARK = "\u0000madmail-param:";

type Slot = { key: string } | { value: unknown };

export type PreparedQuery<P, R> = (db: Kysely<Database>, values: P) => Promise<QueryResult<R>>;

/**
 * `build` receives stand-ins for its parameters: pass each to Kysely as a value, untouched
 * (no arithmetic, no JSON.stringify), so that it lands in the compiled parameter list. The
 * stand-in object has no keys of its own: name every column (`values({ a: p.a })`, never
 * `values(p)`).
 */
export function prepareQuery<P extends Record<string, unknown>, R>(build: (db: Kysely<Database>, p: P) => Compilable<R>): PreparedQuery<P, R> {
  let template: CompiledQuery<R> | null = null;
  let slots: Slot[] = [];
  return async (db, values) => {
    if (!template) {
      const marks = new Proxy({}, { get: (_, k) => MARK + String(k) }) as P;
      const compiled = build(db, marks).compile();
      const found: Slot[] = compiled.parameters.map((v) => (typeof v === "string" && v.startsWith(MARK) ? { key: v.slice(MARK.length) } : { value: v }));
      if (!found.some((s) => "key" in s)) throw new Error(`prepared query without parameters (values(p) instead of naming the columns?): ${compiled.sql}`);
      [template, slots] = [compiled, found];
    }
    const parameters = slots.map((s) => {
      if (!("key" in s)) return s.value;
      if (!(s.key in values)) throw new Error(`prepared query: no value for ${s.key} in ${template!.sql}`);
      return values[s.key];
    });
    return db.executeQuery({ ...template, parameters });
  };
}

/** First row or undefined, as executeTakeFirst() gives. */
export async function firstRow<P extends Record<string, unknown>, R>(q: PreparedQuery<P, R>, db: Kysely<Database>, values: P): Promise<R | undefined> {
  return (await q(db, values)).rows[0];
}

/** Rows changed (inserted, updated or deleted) by a prepared write. */
export async function changedRows<P extends Record<string, unknown>, R>(q: PreparedQuery<P, R>, db: Kysely<Database>, values: P): Promise<bigint> {
  return (await q(db, values)).numAffectedRows ?? 0n;
}
