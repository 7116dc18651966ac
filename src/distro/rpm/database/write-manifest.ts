import { dirname } from "node:path";
import { quoteUntrusted, SutureError } from "../../../errors/errors.ts";
import { READ_POLICY, readFileInRoot, walkInRoot } from "../../../fs/in-root.ts";
import {
  formatRpmNevra,
  parseRpmHeader,
  type RpmHeader,
  type RpmNevra,
  RpmTag,
  rpmHeaderNevra,
} from "../header.ts";
import type { InstalledRpm, RpmDatabaseLocation } from "../installed.ts";
import { parseRpmManifest } from "./manifest.ts";
import type { RpmDatabaseChange } from "./write.ts";
import { replaceImageFile } from "./write-file.ts";

/**
 * Writing Azure Linux distroless's package lists (manifest.ts reads the first):
 *
 * - `container-manifest-2`: one line per package, rpm's
 *   `%{NAME}\t%{VERSION}-%{RELEASE}\t%{INSTALLTIME}\t%{BUILDTIME}\t%{VENDOR}\t%{EPOCH}\t%{SIZE}\t%{ARCH}\t%{EPOCHNUM}\t%{SOURCERPM}`
 *   (an absent tag prints as `(none)`, EPOCHNUM as 0);
 * - `container-manifest-1` beside it, when the image has one: `rpm -qa`'s `NAME-VERSION-RELEASE.ARCH`.
 *
 * Both list packages in `rpm -qa` order as the image was built. An upgraded package's line is
 * replaced where it stood (the new package of the same name and architecture takes the removed
 * one's place, as copa edits these files); a removed package without a successor loses its line;
 * a package new to the image is appended, where `rpm -qa` lists a newly installed package. Other
 * lines are kept byte for byte. Each file is replaced atomically, keeping its mode and owner.
 */

const MANIFEST_1 = "container-manifest-1";

const FIX =
  "the image's rpm manifest changed while it was patched, or is damaged; patch the original image again";

/** A package's container-manifest-2 line, from its installed header. */
export function rpmManifestLine(header: RpmHeader, what: string): string {
  const text = (tag: number) => header.string(tag) ?? "(none)";
  const num = (tag: number) => {
    const n = header.number(tag);
    return n === undefined ? "(none)" : String(n);
  };
  const fields = [
    text(RpmTag.NAME),
    `${text(RpmTag.VERSION)}-${text(RpmTag.RELEASE)}`,
    num(RpmTag.INSTALLTIME),
    num(RpmTag.BUILDTIME),
    text(RpmTag.VENDOR),
    num(RpmTag.EPOCH),
    num(RpmTag.SIZE),
    text(RpmTag.ARCH),
    // EPOCHNUM: the epoch, 0 when there is none.
    String(header.number(RpmTag.EPOCH) ?? 0),
    text(RpmTag.SOURCERPM),
  ];
  for (const f of fields) {
    // A tab or newline would shift every later field, or start a line of its own.
    if (/[\t\n\r]/.test(f)) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${what} has a header field ${quoteUntrusted(f)} with a tab or line break, which the rpm manifest cannot hold; use the distribution's own package`,
      );
    }
  }
  return fields.join("\t");
}

/** `NAME-VERSION-RELEASE.ARCH`, a container-manifest-1 line (rpm -qa prints no epoch). */
function manifest1Line(nevra: RpmNevra): string {
  return formatRpmNevra({ ...nevra, epoch: 0 });
}

export async function writeRpmManifest(
  root: string,
  location: RpmDatabaseLocation,
  change: RpmDatabaseChange,
): Promise<void> {
  const what = location.path;
  const added = change.add.map(({ header }) => {
    const parsed = parseRpmHeader(header, `a package added to ${what}`);
    const name = parsed.string(RpmTag.NAME) ?? "";
    return { header: parsed, name, arch: parsed.string(RpmTag.ARCH), line: rpmManifestLine(parsed, name) };
  });
  const walk = walkInRoot(root, location.path, READ_POLICY);
  const bytes = await readFileInRoot(root, location.path);
  if (walk.kind !== "found" || !walk.stat.isFile() || bytes === undefined) {
    throw new SutureError("IO", `cannot write the rpm manifest ${what}: it is not a file in the image`);
  }
  const text = bytes.toString("utf8");
  const entries = parseRpmManifest(text, what);
  const lines = text.split("\n");
  // Which removed package each line held, checked against what was read before the change.
  const removedAt = new Map<number, InstalledRpm>();
  for (const pkg of change.remove) {
    const entry = entries.find((e) => e.line === pkg.recordNumber);
    if (entry === undefined || formatRpmNevra(entry.nevra) !== formatRpmNevra(pkg.nevra)) {
      throw new SutureError(
        "INTERNAL",
        `${what} line ${pkg.recordNumber} is no longer ${quoteUntrusted(formatRpmNevra(pkg.nevra))}; ${FIX}`,
      );
    }
    removedAt.set(pkg.recordNumber - 1, pkg);
  }
  const successors = pairSuccessors(change.remove, added);
  const out2: string[] = [];
  lines.forEach((line, i) => {
    const removed = removedAt.get(i);
    if (removed === undefined) out2.push(line);
    else {
      const next = successors.get(removed);
      if (next !== undefined) out2.push(next.line);
    }
  });
  const appended = added.filter((a) => ![...successors.values()].includes(a));
  const manifest2 = withAppended(
    out2,
    appended.map((a) => a.line),
  );
  await replaceImageFile(walk.host, walk.stat, Buffer.from(manifest2, "utf8"), what);

  const manifest1 = `${dirname(location.path)}/${MANIFEST_1}`;
  const walk1 = walkInRoot(root, manifest1, READ_POLICY);
  const bytes1 = await readFileInRoot(root, manifest1);
  if (walk1.kind !== "found" || !walk1.stat.isFile() || bytes1 === undefined) return;
  const out1: string[] = [];
  const oldLines = new Map(change.remove.map((pkg) => [manifest1Line(pkg.nevra), pkg]));
  for (const line of bytes1.toString("utf8").split("\n")) {
    const key = line.endsWith("\r") ? line.slice(0, -1) : line;
    const removed = oldLines.get(key);
    if (removed === undefined) out1.push(line);
    else {
      oldLines.delete(key);
      const next = successors.get(removed);
      if (next !== undefined) out1.push(manifest1Line(nevraOf(next.header)));
    }
  }
  const appended1 = appended.map((a) => manifest1Line(nevraOf(a.header)));
  await replaceImageFile(
    walk1.host,
    walk1.stat,
    Buffer.from(withAppended(out1, appended1), "utf8"),
    manifest1,
  );
}

/** Lines of a file split at "\n", with `more` added before its final newline. */
function withAppended(lines: string[], more: readonly string[]): string {
  if (more.length === 0) return lines.join("\n");
  const body = lines.at(-1) === "" ? lines.slice(0, -1) : lines;
  return `${[...body, ...more].join("\n")}\n`;
}

/** The added package that takes each removed one's place: same name and architecture. */
function pairSuccessors<A extends { name: string; arch: string | undefined }>(
  removed: readonly InstalledRpm[],
  added: readonly A[],
): Map<InstalledRpm, A> {
  const pairs = new Map<InstalledRpm, A>();
  const taken = new Set<A>();
  for (const pkg of removed) {
    const next = added.find((a) => !taken.has(a) && a.name === pkg.nevra.name && a.arch === pkg.nevra.arch);
    if (next === undefined) continue;
    taken.add(next);
    pairs.set(pkg, next);
  }
  return pairs;
}

function nevraOf(header: RpmHeader): RpmNevra {
  return rpmHeaderNevra(header, "a package added to the rpm manifest", "use the distribution's own package");
}
