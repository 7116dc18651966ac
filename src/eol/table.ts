/**
 * End-of-life dates of distribution releases, offline: a table bundled with suture
 * (`releases.json`, written by hand, its source and date inside it), which `suture eol --update`
 * replaces per product with endoflife.date's current data in the cache dir (update.ts). An image
 * is matched by its os-release (ID, VERSION_ID, VERSION_CODENAME) — no network at patch time.
 *
 * Phases are endoflife.date's: `eol` ends the release's regular (security) support; `extended`
 * ends what comes after it where the vendor offers something (Debian LTS, Ubuntu ESM, RHEL ELS,
 * SLES LTSS). A release is "end of life" only once every phase has ended: between the two a
 * patch can still find fixes (Debian LTS publishes into the release's own security suite), so
 * it is "extended" — a warning, not a refusal.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { OsRelease } from "../distro/os-release.ts";
import { SutureError } from "../errors/errors.ts";
import bundled from "./releases.json" with { type: "json" };

const isoDate = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "a YYYY-MM-DD date");

export const eolReleaseSchema = z.object({
  /** endoflife.date's release name: `12`, `22.04`, `3.20`, `2023`, `15.6`. */
  name: z.string().min(1).max(64),
  /** Lower-case first word of the codename (`bookworm`, `jammy`), where the release has one. */
  codename: z.string().max(64).optional(),
  released: isoDate.nullable().optional(),
  /** End of regular support; null: no end announced. */
  eol: isoDate.nullable(),
  /** End of extended support (LTS, ESM, ELS, LTSS); null or absent: none. */
  extended: isoDate.nullable().optional(),
});
export type EolRelease = z.infer<typeof eolReleaseSchema>;

export const eolProductSchema = z.object({
  label: z.string().min(1).max(128),
  /** What the vendor calls each phase, for messages. */
  phases: z.object({ eol: z.string().max(64), extended: z.string().max(64).optional() }),
  /** Where the vendor moves a release's repository once it is past every phase. */
  archive: z.object({ from: z.string().url(), to: z.string().url() }).optional(),
  releases: z.array(eolReleaseSchema).max(1000),
});
export type EolProduct = z.infer<typeof eolProductSchema>;

export const eolTableSchema = z.object({
  /** Where the dates come from and when they were taken. */
  source: z.string().max(1000),
  asOf: isoDate,
  products: z.record(z.string().regex(/^[a-z0-9-]{1,64}$/), eolProductSchema),
});
export type EolTable = z.infer<typeof eolTableSchema>;

/** The products suture matches images to (endoflife.date's names), in the order `suture eol` lists them. */
export const EOL_PRODUCTS = [
  "debian",
  "ubuntu",
  "alpine",
  "rhel",
  "rocky-linux",
  "almalinux",
  "centos-stream",
  "centos",
  "oracle-linux",
  "fedora",
  "amazon-linux",
  "azure-linux",
  "cbl-mariner",
  "sles",
  "opensuse",
] as const;
export type EolProductName = (typeof EOL_PRODUCTS)[number];

/** The table shipped with suture. */
export function bundledEolTable(): EolTable {
  return eolTableSchema.parse(bundled);
}

/** Where `suture eol --update` keeps what it fetched. */
export function eolCacheFile(cacheDir: string): string {
  return join(cacheDir, "eol", "endoflife-date.json");
}

/**
 * The table to judge images by: the bundled one, with the products `suture eol --update` fetched
 * in its place. A cache file that does not parse is refused naming the fix, not ignored: a user
 * who updated expects the update to count.
 */
export async function loadEolTable(cacheDir: string | undefined): Promise<EolTable> {
  const table = bundledEolTable();
  if (!cacheDir) return table;
  const file = eolCacheFile(cacheDir);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return table;
    throw new SutureError("IO", `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  let cached: EolTable;
  try {
    cached = eolTableSchema.parse(JSON.parse(text));
  } catch (e) {
    throw new SutureError(
      "IO",
      `${file} is not an EOL table suture wrote: remove it (the bundled table is used) or run suture eol --update`,
      { cause: e },
    );
  }
  return { source: cached.source, asOf: cached.asOf, products: { ...table.products, ...cached.products } };
}

export type EolStatus = "supported" | "extended" | "eol" | "unknown";

export interface EolState {
  status: EolStatus;
  /** endoflife.date's product, when the OS is one the table covers. */
  product?: string;
  /** The matched release's name. */
  release?: string;
  /** `Debian 11 (bullseye)`, or the os-release's own name when nothing matched. */
  label: string;
  eol?: string | null;
  extended?: string | null;
  /** The date the current phase ends (supported: eol; extended: extended), or when support ended (eol). */
  until?: string | null;
  /** One line a user reads: the state and what to do about it. */
  message: string;
  /**
   * For a release past every phase whose vendor moves it to an archive: the `--mirror` that
   * makes its repositories reachable again (`FROM=TO`).
   */
  archiveMirror?: string;
  /** Where the dates came from (the table's `asOf`). */
  asOf: string;
}

/**
 * Which endoflife.date product an os-release names, or undefined for one the table does not
 * cover (rolling distributions such as Wolfi have no end of life).
 */
export function eolProductOf(os: OsRelease): EolProductName | undefined {
  const name = (os.fields.NAME ?? "").toLowerCase();
  switch (os.id) {
    case "debian":
    case "ubuntu":
    case "alpine":
    case "rhel":
    case "almalinux":
    case "fedora":
      return os.id;
    case "rocky":
      return "rocky-linux";
    case "centos":
      // CentOS Linux ended at 8; os-release says "CentOS Stream" for every Stream release.
      return name.includes("stream") ? "centos-stream" : "centos";
    case "ol":
      return "oracle-linux";
    case "amzn":
      return "amazon-linux";
    case "azurelinux":
      return "azure-linux";
    case "mariner":
      return "cbl-mariner";
    case "sles":
    case "sled":
    case "sle_hpc":
      return "sles";
    case "opensuse-leap":
      return "opensuse";
    default:
      return undefined;
  }
}

/**
 * The release of `product` an os-release names: by VERSION_ID as given, then its `major.minor`,
 * then its major (`9.4` is RHEL 9, `3.20.3` is Alpine 3.20, `15.6` is SLES 15.6), then by
 * codename (Debian testing has no VERSION_ID, only VERSION_CODENAME).
 */
export function matchRelease(product: EolProduct, os: OsRelease): EolRelease | undefined {
  const candidates: string[] = [];
  const id = os.versionId?.trim();
  if (id) {
    candidates.push(id);
    const parts = id.split(".");
    if (parts.length > 2) candidates.push(parts.slice(0, 2).join("."));
    if (parts.length > 1) candidates.push(parts[0]!);
  }
  for (const c of candidates) {
    const hit = product.releases.find((r) => r.name === c);
    if (hit) return hit;
  }
  const codename = os.versionCodename?.trim().toLowerCase();
  if (codename) return product.releases.find((r) => r.codename === codename);
  return undefined;
}

/** The EOL state of the OS an image's os-release names, on day `now`. */
export function eolState(os: OsRelease | undefined, table: EolTable, now: Date = new Date()): EolState {
  const asOf = table.asOf;
  if (!os)
    return { status: "unknown", label: "unknown OS", message: "no os-release: EOL state unknown", asOf };
  const productName = eolProductOf(os);
  const product = productName ? table.products[productName] : undefined;
  const shown = os.prettyName ?? `${os.id} ${os.versionId ?? ""}`.trim();
  if (!productName || !product) {
    return {
      status: "unknown",
      label: shown,
      message: `${shown} is not in suture's EOL table: EOL state unknown`,
      asOf,
    };
  }
  const release = matchRelease(product, os);
  if (!release) {
    return {
      status: "unknown",
      product: productName,
      label: shown,
      message: `${shown} is not in suture's EOL table (as of ${asOf}): EOL state unknown; run suture eol --update to refresh it`,
      asOf,
    };
  }
  return releaseState(productName, product, release, table.asOf, now);
}

/** The EOL state of one release of the table on day `now`. */
export function releaseState(
  productName: string,
  product: EolProduct,
  release: EolRelease,
  asOf: string,
  now: Date = new Date(),
): EolState {
  const label = `${product.label} ${release.name}${release.codename ? ` (${release.codename})` : ""}`;
  const today = now.toISOString().slice(0, 10);
  const extended = release.extended ?? null;
  // As endoflife.date's `eolFrom`: the release is out of that phase from that day on.
  const past = (date: string | null) => date !== null && today >= date;
  const base = { product: productName, release: release.name, label, eol: release.eol, extended, asOf };
  if (!past(release.eol)) {
    return {
      ...base,
      status: "supported",
      until: release.eol,
      message: release.eol
        ? `${label} is supported (${product.phases.eol} until ${release.eol})`
        : `${label} is supported (no end of life announced)`,
    };
  }
  const extendedName = product.phases.extended ?? "extended support";
  if (extended !== null && !past(extended)) {
    return {
      ...base,
      status: "extended",
      until: extended,
      message: `${label} is past its ${product.phases.eol} (ended ${release.eol}), in ${extendedName} until ${extended}: fixes come only from ${extendedName}`,
    };
  }
  const ended = extended ?? release.eol;
  const archiveMirror = product.archive ? `${product.archive.from}=${product.archive.to}` : undefined;
  return {
    ...base,
    status: "eol",
    until: ended,
    message: `${label} is end of life since ${ended}: no more fixes are published for it${
      archiveMirror ? `; its packages move to an archive: use --mirror ${archiveMirror}` : ""
    }; upgrade the base image`,
    ...(archiveMirror ? { archiveMirror } : {}),
  };
}
