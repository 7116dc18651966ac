import { createHash } from "node:crypto";
import type { FixSource } from "../distro/changelog-ids.ts";
import { SutureError } from "../errors/errors.ts";
import { writeFileAtomic } from "../fs/atomic.ts";
import type { PlannedUpdate, UpdatePlan } from "../report/plan.ts";
import { formatPurl, isPurlOfType, nativeArch, ociPurl, rpmPurl } from "./purl.ts";
import { type OpenVexDocument, OpenVexDocumentSchema, type OpenVexStatement } from "./schema.ts";

export type { OpenVexDocument, OpenVexStatement } from "./schema.ts";

export const OPENVEX_CONTEXT = "https://openvex.dev/ns/v0.2.0" as const;
export const SUTURE_TOOLING = "suture";

/** One image the statements are about. */
export interface VexProduct {
  /** Digest of the patched image manifest (or of the index, for a multi-platform image). */
  digest: string;
  /** Registry host and repository, e.g. "docker.io/library/nginx"; becomes repository_url. */
  repository: string;
  /** OCI architecture of a per-platform product (left out for an index). */
  architecture?: string;
}

/**
 * What was patched for one platform: the (installed-filtered) plan, the names of the packages
 * that really reached their fixed versions, and the products those fixes are in (the platform's
 * manifest, plus the index that contains it for multi-platform images).
 */
export interface VexSubject {
  plan: UpdatePlan;
  patched: ReadonlySet<string>;
  products: readonly VexProduct[];
  /**
   * Where the plan's vulnerability IDs come from when no scanner report gave them (update-all):
   * package name → the package's own record. Each statement's `status_notes` names them.
   */
  sources?: ReadonlyMap<string, FixSource>;
}

/** The words a statement's status_notes says a source with. */
const SOURCE_NOTES: Record<FixSource, string> = {
  "debian-changelog":
    "debian-changelog: named in the package's changelog.Debian entries after the installed version, up to the installed update",
  "rpm-changelog":
    "rpm-changelog: named in the package's %changelog entries newer than the installed package's",
  "alpine-secfixes": "alpine-secfixes: listed in the package's secfixes for the updated version",
};

export interface BuildOpenVexOptions {
  /** Default: $SUTURE_VEX_AUTHOR, else "suture". */
  author?: string;
  /** Default: now. */
  timestamp?: Date;
}

/**
 * Build an OpenVEX 0.2.0 document claiming status `fixed` for every vulnerability of every
 * patched package: one statement per vulnerability ID, whose products carry the fixed packages
 * as subcomponents (purl at the installed, vulnerable version, like copa, so it correlates with
 * the scanner's findings). Packages not in `patched` (failed or skipped) claim nothing.
 * Returns null when nothing would be stated (an OpenVEX document needs a statement).
 *
 * Differences from copa: `@context` is the versioned v0.2.0 namespace; `vulnerability.name`
 * is always set (the schema requires it, copa#1651); `vulnerability["@id"]` is set only where
 * an IRI for the ID is known (CVE → NVD, GHSA → GitHub advisories), since a bare ID is not an
 * IRI. The result is checked against OpenVexDocumentSchema before it is returned.
 */
export function buildOpenVex(
  subjects: readonly VexSubject[],
  options: BuildOpenVexOptions = {},
): OpenVexDocument | null {
  // vulnerability ID → product @id → subcomponent @ids, all in first-seen order.
  const claims = new Map<string, Map<string, Set<string>>>();
  // vulnerability ID → where packages said they fix it (update-all).
  const sourcesOf = new Map<string, Set<FixSource>>();
  for (const { plan, patched, products, sources } of subjects) {
    if (products.length === 0) continue;
    const productIds = products.map(ociPurl);
    for (const u of plan.updates) {
      if (!patched.has(u.name) || u.installedVersion === u.fixedVersion) continue;
      const component = subcomponentPurl(plan, u);
      for (const id of u.vulnerabilities) {
        if (id.trim() === "") continue;
        const byProduct = getOrCreate(claims, id, () => new Map<string, Set<string>>());
        const source = sources?.get(u.name);
        if (source) getOrCreate(sourcesOf, id, () => new Set<FixSource>()).add(source);
        for (const pid of productIds) getOrCreate(byProduct, pid, () => new Set<string>()).add(component);
      }
    }
  }
  if (claims.size === 0) return null;

  const statements: OpenVexStatement[] = [...claims].map(([id, byProduct]) => {
    const iri = vulnerabilityIri(id);
    return {
      vulnerability: iri ? { "@id": iri, name: id } : { name: id },
      products: [...byProduct].map(([pid, subs]) => ({
        "@id": pid,
        subcomponents: [...subs].map((s) => ({ "@id": s })),
      })),
      status: "fixed" as const,
      ...(sourcesOf.has(id)
        ? {
            status_notes: [...sourcesOf.get(id)!]
              .sort()
              .map((src) => SOURCE_NOTES[src])
              .join("; "),
          }
        : {}),
    };
  });
  const body = {
    "@context": OPENVEX_CONTEXT,
    author: options.author ?? (process.env.SUTURE_VEX_AUTHOR || "suture"),
    timestamp: (options.timestamp ?? new Date()).toISOString(),
    version: 1,
    tooling: SUTURE_TOOLING,
    statements,
  };
  const doc = {
    "@context": body["@context"],
    "@id": `https://openvex.dev/docs/public/vex-${createHash("sha256").update(canonicalJson(body)).digest("hex")}`,
    author: body.author,
    timestamp: body.timestamp,
    version: body.version,
    tooling: body.tooling,
    statements: body.statements,
  };
  const checked = OpenVexDocumentSchema.safeParse(doc);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    throw new SutureError(
      "INTERNAL",
      `built an invalid OpenVEX document at /${issue.path.join("/")}: ${issue.message}`,
      { cause: checked.error },
    );
  }
  return doc;
}

function getOrCreate<K, V>(map: Map<K, V>, key: K, create: () => V): V {
  let value = map.get(key);
  if (value === undefined) {
    value = create();
    map.set(key, value);
  }
  return value;
}

/** An IRI naming a vulnerability ID, for the ID schemes with a canonical public page. */
export function vulnerabilityIri(id: string): string | undefined {
  if (/^CVE-\d{4}-\d{4,}$/.test(id)) return `https://nvd.nist.gov/vuln/detail/${id}`;
  if (/^GHSA(?:-[23456789cfghjmpqrvwx]{4}){3}$/.test(id)) return `https://github.com/advisories/${id}`;
  return undefined;
}

/**
 * The subcomponent purl of an updated package: the scanner's own purl when the report had one
 * of the right type (so the statement matches the scanner's package exactly, e.g. arch=all),
 * else `pkg:<deb|apk>/<os family>/<name>@<installed>?arch=<native arch>&distro=<family>-<version>`, or
 * for rpm Trivy's form (vendor namespace, epoch as a qualifier: `rpmPurl`).
 */
export function subcomponentPurl(plan: UpdatePlan, u: PlannedUpdate): string {
  const type = u.packageType ?? "generic";
  if (u.purl && !/\s/.test(u.purl) && isPurlOfType(u.purl, type)) return u.purl;
  const family = plan.os?.family || u.type || undefined;
  if (type === "rpm") {
    return rpmPurl({
      family,
      osVersion: plan.os?.version,
      name: u.name,
      evr: u.installedVersion || u.fixedVersion,
      arch: nativeArch("rpm", plan.arch, plan.variant),
    });
  }
  return formatPurl({
    type,
    namespace: type === "generic" ? undefined : family,
    name: u.name,
    version: u.installedVersion || u.fixedVersion,
    qualifiers: {
      arch: nativeArch(u.packageType, plan.arch, plan.variant),
      distro: family && plan.os?.version ? `${family}-${plan.os.version}` : undefined,
    },
  });
}

/** JSON with object keys sorted at every level: the content the document ID is a hash of. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * Write a document atomically: a temporary file in the same directory, mode 0644, renamed over
 * `path` (readers never see a partial document; an existing file is replaced).
 */
export async function writeOpenVex(path: string, doc: OpenVexDocument): Promise<void> {
  // exactMode: the umask may narrow the mode; the document is meant to be world-readable.
  await writeFileAtomic(path, `${JSON.stringify(doc, null, 2)}\n`, {
    mode: 0o644,
    exactMode: true,
    fsync: false,
    failure: `cannot write VEX document ${path}`,
  });
}
