import type { Readable } from "node:stream";
import { SaxesParser, type SaxesTagNS } from "saxes";
import { type DecodeFormat, decompress } from "../../archive/compression.ts";
import { describeCause, isSutureError, quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { VerifyingStream, verifyAlongside } from "../../stream/verifying-stream.ts";
import { checkPackageFields } from "../package-syntax.ts";
import { type RepoChecksum, type RepomdData, repoChecksum, repoLocation } from "./repomd.ts";

/**
 * A repository's `primary.xml` (gzip, xz, zstd or bzip2 compressed, or plain): every package's
 * identity, checksum, location, sizes, dependencies and the files primary carries (those under
 * /etc and the bin directories, which is what file requires name). It is read as a stream,
 * checked against repomd.xml's checksum as it arrives; nothing from it is returned before the
 * whole file has verified.
 */

/** rpm's comparison flags as rpm-md writes them (header-contents.ts reads the header's bit form). */
export type RepoDepFlags = "EQ" | "LT" | "LE" | "GT" | "GE";

export interface RepoDependency {
  /** A package or capability name, a file path (`/bin/sh`), or a rich dependency `(a or b)`. */
  name: string;
  flags?: RepoDepFlags;
  epoch?: string;
  version?: string;
  release?: string;
  /** `Requires(pre)`/`(post)`…: needed while the package's scriptlets run. */
  pre?: boolean;
}

export type PrimaryFileType = "file" | "dir" | "ghost";

export interface PrimaryFile {
  path: string;
  type: PrimaryFileType;
}

export interface RepoPackage {
  name: string;
  arch: string;
  /** 0 when the package has none (rpm-md writes epoch="0"). */
  epoch: number;
  version: string;
  release: string;
  /** The .rpm file's checksum (`pkgid`): what a download is checked against. */
  checksum: RepoChecksum;
  /** Relative to the repository's base URL, checked to stay inside it. */
  location: string;
  /** Size of the .rpm file. */
  packageSize: number;
  /** Sum of the installed file sizes. */
  installedSize: number;
  /** Byte range of the main header in the .rpm (`rpm:header-range`), when listed. */
  headerRange?: { start: number; end: number };
  /** `rpm:sourcerpm` (`openssl-3.0.7-27.el9.src.rpm`), when the package has one. */
  sourceRpm?: string;
  provides: RepoDependency[];
  requires: RepoDependency[];
  obsoletes: RepoDependency[];
  conflicts: RepoDependency[];
  files: PrimaryFile[];
}

export interface ReadPrimaryOptions {
  /** What is read (its URL), for messages. */
  what: string;
  /** Most decompressed bytes accepted (default 2 GiB; Fedora's largest primary is a few hundred MB). */
  maxBytes?: number;
  /** Most packages accepted (default 1,000,000). */
  maxPackages?: number;
  /**
   * Which packages to keep (default all): the others are dropped as soon as they are parsed, so
   * a resolver that needs a few names of Fedora's 70,000 packages does not hold them all. Every
   * package is still checked, and nothing is returned unless the whole file verifies.
   */
  keep?: (pkg: RepoPackage) => boolean;
  signal?: AbortSignal;
}

const DEFAULT_MAX_BYTES = 2 * 1024 * 1024 * 1024;
const DEFAULT_MAX_PACKAGES = 1_000_000;
/** Longest text kept of an element (a name, a file path, a checksum); longer is refused. */
const MAX_TEXT = 16 * 1024;
/** Most dependencies or files of one package: texlive's largest carry tens of thousands of files. */
const MAX_LIST = 200_000;

const COMMON_NS = "http://linux.duke.edu/metadata/common";
const RPM_NS = "http://linux.duke.edu/metadata/rpm";

const PRIMARY_FIX = "the repository's metadata is broken or was tampered with; use another mirror";

const DEP_LISTS = ["provides", "requires", "obsoletes", "conflicts"] as const;
type DepList = (typeof DEP_LISTS)[number];

/** The compression of a metadata file, from its location's extension, as dnf decides it. */
export function metadataCompression(location: string): DecodeFormat {
  if (location.endsWith(".gz")) return "gzip";
  if (location.endsWith(".xz")) return "xz";
  if (location.endsWith(".zst")) return "zstd";
  if (location.endsWith(".bz2")) return "bzip2";
  return "none";
}

/**
 * Read primary.xml from `input` (the stored bytes), checking them against `entry` (its repomd.xml
 * entry: checksum, size) as they stream and decompressing and parsing at the same time. A
 * checksum or size mismatch is UNTRUSTED, and wins over whatever the bytes broke downstream (a
 * tampered file rarely still decompresses); malformed XML or package fields are UNTRUSTED too;
 * more than the limits TOO_LARGE.
 */
export async function readPrimary(
  input: Readable,
  entry: RepomdData,
  options: ReadPrimaryOptions,
): Promise<RepoPackage[]> {
  const what = options.what;
  const format = metadataCompression(entry.location);
  const verifier = new VerifyingStream(
    { sha256: entry.checksum.value, algorithm: entry.checksum.type, size: entry.size ?? -1 },
    {
      tooLarge: (size) =>
        new SutureError(
          "UNTRUSTED",
          `${what} is larger than the ${size} bytes repomd.xml lists: ${PRIMARY_FIX}`,
        ),
      sizeMismatch: (actual, size) =>
        new SutureError(
          "UNTRUSTED",
          `${what} is ${actual} bytes but repomd.xml lists ${size}: ${PRIMARY_FIX}`,
        ),
      digestMismatch: (actual) =>
        new SutureError(
          "UNTRUSTED",
          `${what} has ${entry.checksum.type} ${actual} but repomd.xml lists ${entry.checksum.value}: ${PRIMARY_FIX}`,
        ),
    },
  );
  // The decoder reads a copy, so that when it gives up (bad data) the verifier can still run to
  // the end and say whether the bytes were tampered with.
  const { copy: toDecoder, verified, settle } = verifyAlongside(input, verifier);

  const parser = new PrimaryParser(what, options.maxPackages ?? DEFAULT_MAX_PACKAGES, options.keep);
  // repomd.xml's open-size is covered by its checksum: more than it is never right.
  const maxBytes = Math.min(
    options.maxBytes ?? DEFAULT_MAX_BYTES,
    entry.openSize ?? Number.POSITIVE_INFINITY,
  );
  try {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    for await (const piece of decompress(toDecoder, format, {
      what,
      maxBytes,
      fix: PRIMARY_FIX,
      ...(options.signal ? { signal: options.signal } : {}),
    })) {
      parser.write(decoder.decode(piece, { stream: true }));
    }
    parser.write(decoder.decode());
    parser.close();
  } catch (e) {
    if (!options.signal?.aborted && !isSutureError(e, "UNTRUSTED")) await settle();
    input.destroy();
    throw isSutureError(e) || options.signal?.aborted
      ? e
      : new SutureError("UNTRUSTED", `${what} is not valid UTF-8 XML (${describeCause(e)}): ${PRIMARY_FIX}`, {
          cause: e,
        });
  }
  await verified;
  return parser.packages;
}

interface PendingPackage {
  name?: string;
  arch?: string;
  epoch?: string;
  version?: string;
  release?: string;
  checksumType?: string;
  checksum?: RepoChecksum;
  location?: string;
  packageSize?: string;
  installedSize?: string;
  headerRange?: { start: string | undefined; end: string | undefined };
  sourceRpm?: string;
  lists: Record<DepList, RepoDependency[]>;
  files: PrimaryFile[];
  fileType?: string;
}

/** The SAX state machine over primary.xml's `<metadata><package>…</package>…</metadata>`. */
class PrimaryParser {
  readonly packages: RepoPackage[] = [];
  readonly #sax = new SaxesParser({ xmlns: true });
  readonly #what: string;
  readonly #maxPackages: number;
  readonly #keep: ((pkg: RepoPackage) => boolean) | undefined;
  #count = 0;
  #depth = 0;
  #pkg: PendingPackage | undefined;
  #list: DepList | undefined;
  #text: string | undefined;

  constructor(what: string, maxPackages: number, keep?: (pkg: RepoPackage) => boolean) {
    this.#what = what;
    this.#maxPackages = maxPackages;
    this.#keep = keep;
    this.#sax.on("error", (e) => {
      throw this.#fail(`is not well-formed XML (${describeCause(e)})`);
    });
    this.#sax.on("doctype", () => {
      throw this.#fail("has a DOCTYPE, which primary.xml never has");
    });
    this.#sax.on("opentag", (node) => this.#open(node));
    this.#sax.on("closetag", (node) => this.#close(node));
    this.#sax.on("text", (t) => {
      if (this.#text === undefined) return;
      if (this.#text.length + t.length > MAX_TEXT)
        throw this.#fail(`has a text longer than ${MAX_TEXT} characters`);
      this.#text += t;
    });
  }

  write(text: string): void {
    this.#sax.write(text);
  }

  close(): void {
    this.#sax.close();
    if (this.#depth !== 0) throw this.#fail("ends early");
  }

  #fail(why: string): SutureError {
    const at = this.#pkg?.name ? ` (package ${quoteUntrusted(this.#pkg.name)})` : "";
    return new SutureError("UNTRUSTED", `${this.#what}${at} ${why}: ${PRIMARY_FIX}`);
  }

  #open(node: SaxesTagNS): void {
    this.#depth++;
    const a = (name: string) => node.attributes[name]?.value;
    if (this.#depth === 1) {
      if (node.local !== "metadata" || node.uri !== COMMON_NS)
        throw this.#fail(`is not a primary.xml (its root element is ${quoteUntrusted(node.name)})`);
      return;
    }
    if (this.#depth === 2) {
      if (node.local === "package" && node.uri === COMMON_NS) {
        if (this.#count++ >= this.#maxPackages)
          throw new SutureError(
            "TOO_LARGE",
            `${this.#what} lists more than ${this.#maxPackages} packages, the most accepted: ${PRIMARY_FIX}`,
          );
        this.#pkg = { lists: { provides: [], requires: [], obsoletes: [], conflicts: [] }, files: [] };
      }
      return;
    }
    const pkg = this.#pkg;
    if (!pkg) return;
    if (this.#depth === 3) {
      switch (node.local) {
        case "name":
        case "arch":
          this.#text = "";
          return;
        case "version":
          pkg.epoch = a("epoch");
          pkg.version = a("ver");
          pkg.release = a("rel");
          return;
        case "checksum":
          pkg.checksumType = a("type");
          this.#text = "";
          return;
        case "size":
          pkg.packageSize = a("package");
          pkg.installedSize = a("installed");
          return;
        case "location":
          if (a("xml:base") !== undefined)
            throw this.#fail("points a package at another server with xml:base");
          pkg.location = a("href");
          return;
      }
      return;
    }
    if (this.#depth === 4 && node.uri === RPM_NS) {
      if (node.local === "sourcerpm") this.#text = "";
      else if (node.local === "header-range") pkg.headerRange = { start: a("start"), end: a("end") };
      else if ((DEP_LISTS as readonly string[]).includes(node.local)) this.#list = node.local as DepList;
      return;
    }
    if (this.#depth === 4 && node.uri === COMMON_NS && node.local === "file") {
      pkg.fileType = a("type") ?? "file";
      this.#text = "";
      return;
    }
    if (this.#depth === 5 && this.#list && node.uri === RPM_NS && node.local === "entry") {
      const list = pkg.lists[this.#list];
      if (list.length >= MAX_LIST) throw this.#fail(`has more than ${MAX_LIST} ${this.#list}`);
      list.push(this.#dependency(a));
    }
  }

  #dependency(a: (name: string) => string | undefined): RepoDependency {
    const name = a("name");
    if (!name || name.length > 4096 || /[\s\0]/.test(name.replace(/ /g, "")))
      throw this.#fail(`has a ${this.#list} entry named ${quoteUntrusted(name ?? "")}`);
    const flags = a("flags");
    if (flags !== undefined && !["EQ", "LT", "LE", "GT", "GE"].includes(flags))
      throw this.#fail(`has a ${this.#list} entry with flags ${quoteUntrusted(flags)}`);
    const dep: RepoDependency = { name };
    if (flags) dep.flags = flags as RepoDepFlags;
    for (const [key, field] of [
      ["epoch", "epoch"],
      ["ver", "version"],
      ["rel", "release"],
    ] as const) {
      const v = a(key);
      if (v === undefined) continue;
      if (!/^[A-Za-z0-9._+~^]{1,256}$/.test(v))
        throw this.#fail(
          `has a ${this.#list} entry ${quoteUntrusted(name)} with ${key} ${quoteUntrusted(v)}`,
        );
      dep[field] = v;
    }
    const pre = a("pre");
    if (pre === "1" || pre === "true") dep.pre = true;
    return dep;
  }

  #close(node: SaxesTagNS): void {
    const depth = this.#depth--;
    const pkg = this.#pkg;
    const text = this.#text;
    if (!pkg) return;
    if (depth === 3 && text !== undefined) {
      this.#text = undefined;
      if (node.local === "name") pkg.name = text.trim();
      else if (node.local === "arch") pkg.arch = text.trim();
      else if (node.local === "checksum")
        pkg.checksum = repoChecksum(
          pkg.checksumType,
          text,
          `${this.#what} (package ${quoteUntrusted(pkg.name ?? "")})`,
        );
      return;
    }
    if (depth === 4 && text !== undefined) {
      this.#text = undefined;
      if (node.local === "sourcerpm") {
        const v = text.trim();
        if (v !== "") {
          if (!/^[A-Za-z0-9_.+~^-]{1,512}\.rpm$/.test(v))
            throw this.#fail(`has sourcerpm ${quoteUntrusted(v)}`);
          pkg.sourceRpm = v;
        }
      } else if (node.local === "file") {
        const type = pkg.fileType;
        if (type !== "file" && type !== "dir" && type !== "ghost")
          throw this.#fail(`has a file of type ${quoteUntrusted(type ?? "")}`);
        if (!text.startsWith("/") || text.includes("\0"))
          throw this.#fail(`has file ${quoteUntrusted(text)}`);
        if (pkg.files.length >= MAX_LIST) throw this.#fail(`has more than ${MAX_LIST} files`);
        pkg.files.push({ path: text, type });
      }
      return;
    }
    if (depth === 4 && this.#list === node.local) {
      this.#list = undefined;
      return;
    }
    if (depth === 2 && node.local === "package") {
      const done = this.#finish(pkg);
      if (!this.#keep || this.#keep(done)) this.packages.push(done);
      this.#pkg = undefined;
    }
  }

  #finish(pkg: PendingPackage): RepoPackage {
    const where = `${this.#what} (package ${quoteUntrusted(pkg.name ?? "")})`;
    const name = pkg.name ?? "";
    const epoch = pkg.epoch ?? "0";
    if (!/^\d{1,10}$/.test(epoch)) throw this.#fail(`has epoch ${quoteUntrusted(epoch)}`);
    if (pkg.version === undefined || pkg.release === undefined) throw this.#fail("has no version or release");
    checkPackageFields(
      "rpm",
      { name, version: `${pkg.version}-${pkg.release}`, architecture: pkg.arch ?? "" },
      where,
      PRIMARY_FIX,
      "UNTRUSTED",
    );
    if (pkg.version.includes("-") || pkg.release.includes("-"))
      throw this.#fail(
        `has version ${quoteUntrusted(`${pkg.version}-${pkg.release}`)} with a - inside a field`,
      );
    if (!pkg.checksum) throw this.#fail("has no checksum");
    const size = (v: string | undefined, field: string) => {
      if (v === undefined || !/^\d{1,15}$/.test(v))
        throw this.#fail(`has ${field} size ${quoteUntrusted(v ?? "")}`);
      return Number(v);
    };
    const out: RepoPackage = {
      name,
      arch: pkg.arch!,
      epoch: Number(epoch),
      version: pkg.version,
      release: pkg.release,
      checksum: pkg.checksum,
      location: repoLocation(pkg.location, where, PRIMARY_FIX),
      packageSize: size(pkg.packageSize, "package"),
      installedSize: size(pkg.installedSize, "installed"),
      provides: pkg.lists.provides,
      requires: pkg.lists.requires,
      obsoletes: pkg.lists.obsoletes,
      conflicts: pkg.lists.conflicts,
      files: pkg.files,
    };
    if (pkg.headerRange) {
      const start = size(pkg.headerRange.start, "header-range start");
      const end = size(pkg.headerRange.end, "header-range end");
      if (end < start) throw this.#fail("has a header-range that ends before it starts");
      out.headerRange = { start, end };
    }
    if (pkg.sourceRpm) out.sourceRpm = pkg.sourceRpm;
    return out;
  }
}
