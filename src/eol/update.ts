/**
 * `suture eol --update`: endoflife.date's current dates for every product the table covers,
 * fetched from its API (v1: `GET {base}/{product}/`, whose `result.releases[]` carry `eolFrom`
 * and, where the vendor has extended support, `eoesFrom`), checked with zod, and written as one
 * table into the cache dir atomically. All products or none: a half-updated table would mix two
 * days' views without saying which is which.
 */
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { SutureError } from "../errors/errors.ts";
import { writeFileAtomic } from "../fs/atomic.ts";
import { createHttpFetch, fetchBytes, type HttpFetch } from "../http/fetch.ts";
import { type ProgressSink, silentProgress } from "../progress/events.ts";
import {
  bundledEolTable,
  EOL_PRODUCTS,
  type EolProduct,
  type EolRelease,
  type EolTable,
  eolCacheFile,
  eolTableSchema,
} from "./table.ts";

export const DEFAULT_EOL_API = "https://endoflife.date/api/v1/products";

/** Far more than any product's answer (Debian's is a few KiB); a bigger one is not endoflife.date's. */
const MAX_PRODUCT_BYTES = 2 * 1024 * 1024;

const apiDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}/)
  .transform((s) => s.slice(0, 10));

/** The part of endoflife.date's v1 product answer suture reads; other fields are ignored. */
const apiProductSchema = z.object({
  schema_version: z.string().regex(/^1\./, "schema 1.x"),
  result: z.object({
    name: z.string(),
    label: z.string().max(128),
    releases: z
      .array(
        z.object({
          name: z.string().min(1).max(64),
          codename: z.string().max(128).nullish(),
          releaseDate: apiDate.nullish(),
          isEol: z.boolean(),
          eolFrom: apiDate.nullish(),
          eoesFrom: apiDate.nullish(),
        }),
      )
      .max(1000),
  }),
});

export interface UpdateEolOptions {
  cacheDir: string;
  /** API base (copa's `--eol-api-url`); default endoflife.date's v1 products endpoint. */
  apiUrl?: string;
  fetch?: HttpFetch;
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** The day the update is made (recorded as the table's `asOf`). */
  now?: Date;
}

/** Fetch, check and write the table; returns it. Errors: NETWORK, NOT_FOUND, INVALID_MANIFEST, IO. */
export async function updateEolTable(options: UpdateEolOptions): Promise<EolTable> {
  const base = (options.apiUrl ?? DEFAULT_EOL_API).replace(/\/+$/, "");
  const fetch = options.fetch ?? createHttpFetch({ connectTimeoutMs: 10_000, headersTimeoutMs: 20_000 });
  const progress = options.progress ?? silentProgress;
  const bundled = bundledEolTable();
  const asOf = (options.now ?? new Date()).toISOString().slice(0, 10);
  const products: Record<string, EolProduct> = {};
  for (const name of EOL_PRODUCTS) {
    const url = `${base}/${name}/`;
    progress({ type: "info", message: `fetching ${url}` });
    const { bytes } = await fetchBytes(fetch, url, {
      maxBytes: MAX_PRODUCT_BYTES,
      headers: { accept: "application/json", "user-agent": "suture (eol table)" },
      signal: options.signal,
    });
    products[name] = toProduct(name, bytes, url, bundled.products[name]!, asOf);
  }
  const table = eolTableSchema.parse({
    source: `endoflife.date API (${base}), fetched by suture eol --update on ${asOf}`,
    asOf,
    products,
  });
  const file = eolCacheFile(options.cacheDir);
  await mkdir(dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify(table, null, 2)}\n`);
  return table;
}

function toProduct(name: string, bytes: Buffer, url: string, bundled: EolProduct, asOf: string): EolProduct {
  let parsed: z.infer<typeof apiProductSchema>;
  try {
    parsed = apiProductSchema.parse(JSON.parse(bytes.toString("utf8")));
  } catch (e) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${url} is not an endoflife.date v1 product answer (${e instanceof z.ZodError ? (e.issues[0]?.message ?? "bad shape") : (e as Error).message}): check --eol-api-url`,
      { cause: e },
    );
  }
  if (parsed.result.name !== name)
    throw new SutureError(
      "INVALID_MANIFEST",
      `${url} describes ${JSON.stringify(parsed.result.name.slice(0, 64))}, not ${name}: check --eol-api-url`,
    );
  const releases: EolRelease[] = parsed.result.releases.map((r) => ({
    name: r.name,
    ...(r.codename ? { codename: r.codename.trim().split(/\s+/)[0]!.toLowerCase() } : {}),
    released: r.releaseDate ?? null,
    // An EOL release without a date ended before the API's day at the latest.
    eol: r.eolFrom ?? (r.isEol ? asOf : null),
    extended: r.eoesFrom ?? null,
  }));
  // Names, phase words and the archive are suture's own (what messages and hints say).
  return { ...bundled, releases };
}
