import { posix } from "node:path";
import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import type { ImageFileAccess } from "../../fs/in-root.ts";

export { fileAccessFromRoot, type ImageFileAccess } from "../../fs/in-root.ts";

import { mirroredUrl } from "../mirrors.ts";
import type { OsRelease } from "../os-release.ts";
import { field, parseControl } from "./control.ts";

/**
 * Which keys may sign a repository (apt's `Signed-By`):
 * - `path`: one keyring file (binary `.gpg` or armored `.asc`) at this absolute path in the image;
 * - `inline`: an armored public key block written into a deb822 `.sources` file;
 * - `paths`/`fingerprints`: several keyrings and/or fingerprints (a fingerprint selects that key
 *   from the image's default trusted keys, /etc/apt/trusted.gpg(.d)).
 * Absent: every key in the image's default trusted keys may sign.
 */
export type SignedBy = { path: string } | { inline: string } | { paths: string[]; fingerprints: string[] };

/** One binary (`deb`) repository suite. `deb-src` entries are not returned. */
export interface AptSource {
  /** Repository base URI without a trailing slash, e.g. `http://deb.debian.org/debian`. */
  uri: string;
  /** Suite or codename (`bookworm-security`); a flat repository's path ends with `/` (`./`). */
  suite: string;
  /** Components; empty exactly for a flat repository. */
  components: string[];
  signedBy?: SignedBy;
  /** Architectures the source is restricted to (`arch=`/`Architectures:`). */
  arch?: string[];
  /** `trusted=yes`: apt accepts the repository unsigned. */
  trusted?: boolean;
  /** `check-valid-until=` / `Check-Valid-Until:`; absent: apt.conf's Acquire::Check-Valid-Until decides. */
  checkValidUntil?: boolean;
  /** The file (in the image) the entry came from, for messages. */
  origin?: string;
}

/** File access over files already read from an image (e.g. `DistroInfo.files`). */
export function fileAccessFromMap(files: ReadonlyMap<string, Uint8Array>): ImageFileAccess {
  return {
    readFile: async (path) => files.get(posix.normalize(path)),
    listDir: async (path) => {
      const dir = `${posix.normalize(path).replace(/\/+$/, "")}/`;
      const names = new Set<string>();
      for (const p of files.keys()) {
        if (p.startsWith(dir) && p.length > dir.length) names.add(p.slice(dir.length).split("/")[0]!);
      }
      return [...names].sort();
    },
  };
}

/**
 * The image's apt sources, in apt's reading order: `/etc/apt/sources.list`, then
 * `/etc/apt/sources.list.d/*.list` and `*.sources` sorted by name (or where the image's apt.conf
 * moves them: `Dir::Etc::SourceList`, `Dir::Etc::SourceParts`). Disabled (`Enabled: no`) and
 * `deb-src` entries are dropped; files with other extensions are ignored, as apt does.
 * Throws SutureError INVALID_MANIFEST naming the file and line for an entry apt would refuse.
 */
export async function readAptSources(
  files: ImageFileAccess,
  locations: { sourceList: string; sourceParts: string } = {
    sourceList: "/etc/apt/sources.list",
    sourceParts: "/etc/apt/sources.list.d",
  },
): Promise<AptSource[]> {
  const out: AptSource[] = [];
  const main = await files.readFile(locations.sourceList);
  if (main) out.push(...parseSourcesList(Buffer.from(main).toString("utf8"), locations.sourceList));
  const partsDir = locations.sourceParts.replace(/\/+$/, "");
  for (const name of await files.listDir(partsDir)) {
    // apt ignores names with characters outside [A-Za-z0-9_.-] (backup files, editor droppings).
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) continue;
    const path = `${partsDir}/${name}`;
    if (!name.endsWith(".list") && !name.endsWith(".sources")) continue;
    const bytes = await files.readFile(path);
    if (!bytes) continue;
    const text = Buffer.from(bytes).toString("utf8");
    out.push(...(name.endsWith(".list") ? parseSourcesList(text, path) : parseDeb822Sources(text, path)));
  }
  return out;
}

/**
 * Parse the one-line format: `deb [opt=value ...] URI SUITE [COMPONENT...]`. Options understood:
 * `arch=`, `signed-by=`, `trusted=`, `check-valid-until=`; others (`lang=`, `target=`, `pdiffs=`, `by-hash=`, ...) are
 * accepted and ignored because they do not change which packages apt can install.
 */
export function parseSourcesList(text: string, origin = "sources.list"): AptSource[] {
  const out: AptSource[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*$/, "").trim();
    if (!line) continue;
    const where = `${origin}:${i + 1}`;
    const m = /^([a-z-]+)\s*(?:\[([^\]]*)\])?\s*(.*)$/i.exec(line);
    const type = m?.[1];
    if (!m || (type !== "deb" && type !== "deb-src")) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${where}: malformed apt source line ${quoteUntrusted(line)}: expected "deb [options] URI SUITE COMPONENT..."`,
      );
    }
    const options = parseOneLineOptions(m[2] ?? "", where);
    const rest = m[3]!.split(/\s+/).filter(Boolean);
    if (rest.length < 2) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${where}: apt source line ${quoteUntrusted(line)} lacks a URI or suite`,
      );
    }
    if (type !== "deb") continue;
    out.push(
      makeSource(rest[0]!, rest[1]!, rest.slice(2), where, {
        signedBy: options.get("signed-by"),
        arch: options.get("arch"),
        trusted: options.get("trusted"),
        checkValidUntil: options.get("check-valid-until"),
      }),
    );
  }
  return out;
}

function parseOneLineOptions(text: string, where: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const item of text.trim().split(/\s+/).filter(Boolean)) {
    const eq = item.indexOf("=");
    if (eq <= 0)
      throw new SutureError("INVALID_MANIFEST", `${where}: malformed source option ${quoteUntrusted(item)}`);
    // `arch+=`/`arch-=` adjust a default set; with no default set here they are ignored.
    const key = item.slice(0, eq).toLowerCase();
    if (key.endsWith("+") || key.endsWith("-")) continue;
    options.set(key, item.slice(eq + 1));
  }
  return options;
}

/**
 * Parse the deb822 format (`*.sources`): paragraphs with `Types`, `URIs`, `Suites`, `Components`,
 * `Architectures`, `Signed-By` (paths/fingerprints, or an inline armored key), `Trusted`, `Enabled`.
 * Each paragraph yields one source per URI × suite.
 */
export function parseDeb822Sources(text: string, origin = "deb822 sources"): AptSource[] {
  const out: AptSource[] = [];
  let index = 0;
  for (const p of parseControl(text)) {
    index++;
    const where = `${origin} (entry ${index})`;
    const enabled = (field(p, "Enabled") ?? "yes").trim().toLowerCase();
    if (enabled === "no" || enabled === "false") continue;
    const types = words(field(p, "Types"));
    const uris = words(field(p, "URIs"));
    const suites = words(field(p, "Suites"));
    if (!types.length || !uris.length || !suites.length) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${where}: an apt source needs Types, URIs and Suites; fix or remove the entry`,
      );
    }
    if (!types.includes("deb")) continue;
    const components = words(field(p, "Components"));
    for (const uri of uris) {
      for (const suite of suites) {
        out.push(
          makeSource(uri, suite, components, where, {
            signedBy: field(p, "Signed-By"),
            arch: field(p, "Architectures"),
            trusted: field(p, "Trusted"),
            checkValidUntil: field(p, "Check-Valid-Until"),
          }),
        );
      }
    }
  }
  return out;
}

function words(value: string | undefined): string[] {
  return (value ?? "").split(/\s+/).filter(Boolean);
}

function makeSource(
  uri: string,
  suite: string,
  components: string[],
  where: string,
  raw: { signedBy?: string; arch?: string; trusted?: string; checkValidUntil?: string },
): AptSource {
  const flat = suite.endsWith("/");
  if (flat && components.length) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${where}: suite ${quoteUntrusted(suite)} is a flat repository path and cannot have components`,
    );
  }
  if (!flat && !components.length) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${where}: suite ${quoteUntrusted(suite)} has no components (add e.g. "main")`,
    );
  }
  if (!/^[a-z][a-z0-9+.-]*:/i.test(uri)) {
    throw new SutureError("INVALID_MANIFEST", `${where}: ${quoteUntrusted(uri)} is not a URI`);
  }
  const source: AptSource = { uri: normaliseUri(uri), suite, components, origin: where };
  const signedBy = raw.signedBy?.trim() ? parseSignedBy(raw.signedBy) : undefined;
  if (signedBy) source.signedBy = signedBy;
  const arch = raw.arch
    ?.split(/[\s,]+/)
    .map((a) => a.trim())
    .filter(Boolean);
  if (arch?.length) source.arch = arch;
  if (raw.trusted !== undefined) source.trusted = /^(yes|true|1)$/i.test(raw.trusted.trim());
  if (raw.checkValidUntil !== undefined) {
    source.checkValidUntil = !/^(no|false|0|off|without|disable)$/i.test(raw.checkValidUntil.trim());
  }
  return source;
}

function normaliseUri(uri: string): string {
  return uri.replace(/\/+$/, "");
}

function parseSignedBy(value: string): SignedBy {
  const text = value.replace(/^\n+/, "");
  if (text.includes("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
    // deb822 writes empty lines of a multi-line value as " ."; control parsing left "." lines.
    return {
      inline: text
        .split("\n")
        .map((l) => (l.trim() === "." ? "" : l.trim()))
        .join("\n")
        .trim(),
    };
  }
  const items = text.split(/[\s,]+/).filter(Boolean);
  const paths = items.filter((i) => i.startsWith("/"));
  // A fingerprint may carry a trailing "!" (use exactly this subkey); the key is the same.
  const fingerprints = items.filter((i) => !i.startsWith("/")).map((f) => f.replace(/!$/, "").toUpperCase());
  if (paths.length === 1 && fingerprints.length === 0) return { path: paths[0]! };
  return { paths, fingerprints };
}

/** Debian releases by VERSION_ID, for images whose os-release lacks VERSION_CODENAME. */
const DEBIAN_CODENAMES: Record<string, string> = {
  "8": "jessie",
  "9": "stretch",
  "10": "buster",
  "11": "bullseye",
  "12": "bookworm",
  "13": "trixie",
  "14": "forky",
};

/** Own keys only: a VERSION_ID of "constructor" must not find Object.prototype's members. */
function debianCodename(major: string): string | undefined {
  return Object.hasOwn(DEBIAN_CODENAMES, major) ? DEBIAN_CODENAMES[major] : undefined;
}

/** Releases whose packages have moved from deb.debian.org to archive.debian.org. */
const DEBIAN_ARCHIVED = new Set(["jessie", "stretch", "buster"]);

export const DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";
export const UBUNTU_KEYRING = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";

/**
 * The sources a stock image of this release would use, for images that ship none (distroless,
 * slimmed images). Debian: the release, its `-updates` and its security suite; Ubuntu: the release,
 * `-updates` and `-security` (archive/security.ubuntu.com for amd64/i386, ports.ubuntu.com for
 * other architectures). Signed-By names the distribution's archive keyring path; distroless
 * images do not carry it, so the keyring provider must be given a fallback (see trust/keyring.ts).
 * Throws UNSUPPORTED_OS for other distributions or an unknown release.
 */
export function defaultSourcesFor(os: OsRelease, options: { arch?: string } = {}): AptSource[] {
  const arch = options.arch ?? "amd64";
  const isUbuntu = os.id === "ubuntu";
  const isDebian =
    os.id === "debian" || (!isUbuntu && os.idLike.includes("debian") && !os.idLike.includes("ubuntu"));
  if (isDebian) {
    const codename =
      os.versionCodename || debianCodename((os.versionId ?? "").split(".")[0]!) || codenameFromPretty(os);
    if (!codename) {
      throw new SutureError(
        "UNSUPPORTED_OS",
        `cannot tell which Debian release this image is (no VERSION_CODENAME or VERSION_ID in os-release): add apt sources to the image or pass a sources override`,
      );
    }
    const signedBy = { path: DEBIAN_KEYRING };
    const comp = ["main"];
    if (codename === "sid" || codename === "unstable") {
      return [{ uri: "http://deb.debian.org/debian", suite: codename, components: comp, signedBy }];
    }
    if (DEBIAN_ARCHIVED.has(codename)) {
      return [
        { uri: "http://archive.debian.org/debian", suite: codename, components: comp, signedBy },
        {
          uri: "http://archive.debian.org/debian-security",
          suite: `${codename}/updates`,
          components: comp,
          signedBy,
        },
      ];
    }
    return [
      { uri: "http://deb.debian.org/debian", suite: codename, components: comp, signedBy },
      { uri: "http://deb.debian.org/debian", suite: `${codename}-updates`, components: comp, signedBy },
      {
        uri: "http://deb.debian.org/debian-security",
        suite: `${codename}-security`,
        components: comp,
        signedBy,
      },
    ];
  }
  if (isUbuntu) {
    const codename = os.versionCodename || os.fields.UBUNTU_CODENAME;
    if (!codename) {
      throw new SutureError(
        "UNSUPPORTED_OS",
        `cannot tell which Ubuntu release this image is (no VERSION_CODENAME in os-release): add apt sources to the image`,
      );
    }
    const ports = arch !== "amd64" && arch !== "i386";
    const archive = ports ? "http://ports.ubuntu.com/ubuntu-ports" : "http://archive.ubuntu.com/ubuntu";
    const security = ports ? "http://ports.ubuntu.com/ubuntu-ports" : "http://security.ubuntu.com/ubuntu";
    const components = ["main", "restricted", "universe", "multiverse"];
    const signedBy = { path: UBUNTU_KEYRING };
    return [
      { uri: archive, suite: codename, components, signedBy },
      { uri: archive, suite: `${codename}-updates`, components, signedBy },
      { uri: security, suite: `${codename}-security`, components, signedBy },
    ];
  }
  throw new SutureError(
    "UNSUPPORTED_OS",
    `no default apt sources for ${os.prettyName ?? os.id}: only Debian and Ubuntu are known; add apt sources to the image`,
  );
}

function codenameFromPretty(os: OsRelease): string | undefined {
  // Debian testing/sid images say "Debian GNU/Linux trixie/sid" and carry no VERSION_ID.
  const m = /\b([a-z]+)\/sid\b/.exec(os.prettyName ?? "");
  return m?.[1];
}

/**
 * Replace repository URIs by mirrors (`mirroredUrl`: an original URI as written in the image, or
 * one it lies under → the URI to fetch from instead). Signed-By and suites are kept, so a mirror
 * must serve the same signed metadata. Returns new source objects.
 */
export function applyMirrors(
  sources: readonly AptSource[],
  mirrors: Readonly<Record<string, string>>,
): AptSource[] {
  return sources.map((s) => ({ ...s, uri: mirroredUrl(s.uri, mirrors) }));
}

/**
 * Write sources back in the deb822 format apt reads from `sources.list.d/*.sources` (one stanza per
 * source), e.g. to hand apt in the sandbox the image's sources with mirrors applied. Inline keys
 * use deb822's continuation lines, with " ." for empty lines.
 */
export function formatDeb822Sources(sources: readonly AptSource[]): string {
  return sources
    .map((s) => {
      const lines = ["Types: deb", `URIs: ${s.uri}`, `Suites: ${s.suite}`];
      if (s.components.length) lines.push(`Components: ${s.components.join(" ")}`);
      if (s.arch?.length) lines.push(`Architectures: ${s.arch.join(" ")}`);
      if (s.trusted !== undefined) lines.push(`Trusted: ${s.trusted ? "yes" : "no"}`);
      if (s.checkValidUntil !== undefined)
        lines.push(`Check-Valid-Until: ${s.checkValidUntil ? "yes" : "no"}`);
      const sb = s.signedBy;
      if (sb && "path" in sb) lines.push(`Signed-By: ${sb.path}`);
      else if (sb && "paths" in sb) lines.push(`Signed-By: ${[...sb.paths, ...sb.fingerprints].join(" ")}`);
      else if (sb && "inline" in sb) {
        lines.push("Signed-By:", ...sb.inline.split("\n").map((l) => (l.trim() === "" ? " ." : ` ${l}`)));
      }
      return `${lines.join("\n")}\n`;
    })
    .join("\n");
}

/**
 * Refuse sources marked `trusted=yes` (apt then installs from them without checking signatures),
 * unless the user passed --allow-insecure-repositories: both engines call it before any download.
 */
export function refuseSourcesMarkedTrusted(sources: readonly AptSource[]): void {
  const marked = sources.filter((s) => s.trusted);
  if (marked.length)
    throw new SutureError(
      "UNTRUSTED",
      `the image's apt sources mark ${marked.map((s) => quoteUntrusted(s.uri)).join(", ")} trusted=yes, which lets apt install from them without checking signatures: remove the option from the image, or pass --allow-insecure-repositories to accept them as the image's apt would`,
    );
}
