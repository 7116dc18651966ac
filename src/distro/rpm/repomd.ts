import { SaxesParser, type SaxesTagNS } from "saxes";
import { describeCause, quoteUntrusted, SutureError } from "../../errors/errors.ts";
import type { Keyring } from "../../trust/keyring.ts";
import { type Signer, verifyDetached } from "../../trust/signature.ts";

/**
 * An rpm-md repository's index, `repodata/repomd.xml`: which metadata files the repository has
 * (primary, filelists, other, …), where they are and what they must hash to. It is the one file
 * a repository signs (`repomd.xml.asc`, checked when the repo says `repo_gpgcheck=1`); everything
 * else is trusted through the checksums it lists.
 */

/** The hashes repomd.xml names (createrepo_c's `sha` is SHA-1). */
export type RepoChecksumType = "sha1" | "sha224" | "sha256" | "sha384" | "sha512";

export interface RepoChecksum {
  type: RepoChecksumType;
  /** Lower-case hex. */
  value: string;
}

export interface RepomdData {
  /** `primary`, `filelists`, `other`, `primary_db`, `updateinfo`, `modules`, … */
  type: string;
  /** Of the file as stored (compressed). */
  checksum: RepoChecksum;
  /** Of the decompressed file, when listed. */
  openChecksum?: RepoChecksum;
  /** Path relative to the repository's base URL (`repodata/…-primary.xml.zst`), checked to stay inside it. */
  location: string;
  /** Size of the stored file in bytes, when listed. */
  size?: number;
  /** Size decompressed, when listed. */
  openSize?: number;
}

export interface Repomd {
  revision?: string;
  /** By type; a repository lists each type once. */
  data: ReadonlyMap<string, RepomdData>;
}

/** repomd.xml of Fedora's largest repositories is a few KiB; anything near this is not one. */
export const MAX_REPOMD_BYTES = 4 * 1024 * 1024;

const HEX_LENGTH: Record<RepoChecksumType, number> = {
  sha1: 40,
  sha224: 56,
  sha256: 64,
  sha384: 96,
  sha512: 128,
};

const REPO_NS = "http://linux.duke.edu/metadata/repo";

const REPOMD_FIX = "the repository's metadata is broken or was tampered with; use another mirror";

/** A checksum element's `type` attribute and hex text, checked. `where` names it in messages. */
export function repoChecksum(type: string | undefined, value: string, where: string): RepoChecksum {
  const normalized = type === "sha" ? "sha1" : type;
  const hex = value.trim().toLowerCase();
  if (normalized === undefined || !(normalized in HEX_LENGTH)) {
    throw new SutureError(
      "UNTRUSTED",
      `${where} names checksum type ${quoteUntrusted(type ?? "(none)")}, not one of sha1, sha224, sha256, sha384, sha512: ${REPOMD_FIX}`,
    );
  }
  const kind = normalized as RepoChecksumType;
  if (!new RegExp(`^[0-9a-f]{${HEX_LENGTH[kind]}}$`).test(hex)) {
    throw new SutureError(
      "UNTRUSTED",
      `${where} has a ${kind} checksum ${quoteUntrusted(value.trim())} that is not ${HEX_LENGTH[kind]} hex digits: ${REPOMD_FIX}`,
    );
  }
  return { type: kind, value: hex };
}

/**
 * A `location href` of repository metadata, which is joined to the repository's URL: it must be
 * a plain relative path (no scheme, no leading `/`, no `..`, no `xml:base` pointing elsewhere), so
 * signed metadata can only ever name files of its own repository.
 */
export function repoLocation(href: string | undefined, where: string, fix: string): string {
  const bad = (why: string) =>
    new SutureError("UNTRUSTED", `${where} has location ${quoteUntrusted(href ?? "")} ${why}: ${fix}`);
  if (href === undefined || href === "") throw bad("that is empty");
  if (href.length > 4096) throw bad("that is too long");
  if (/[\x00-\x1f\x7f\\?#]/.test(href)) throw bad("with control characters, a backslash, ? or #");
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(href) || href.startsWith("/")) throw bad("outside the repository");
  if (href.split("/").some((part) => part === ".." || part === "." || part === "")) {
    throw bad("that is not a plain relative path");
  }
  return href;
}

function attr(node: SaxesTagNS, name: string): string | undefined {
  return node.attributes[name]?.value;
}

function nonNegativeInteger(text: string, where: string): number {
  const t = text.trim();
  if (!/^\d{1,15}$/.test(t)) {
    throw new SutureError(
      "UNTRUSTED",
      `${where} is ${quoteUntrusted(t)}, not a size in bytes: ${REPOMD_FIX}`,
    );
  }
  return Number(t);
}

/**
 * Parse repomd.xml. Malformed XML, a data entry without a valid checksum or location, a type
 * listed twice, or a location outside the repository: UNTRUSTED naming `what` (its URL).
 * Parse only bytes whose signature was checked when the repository requires one
 * (`verifyRepomdSignature`).
 */
export function parseRepomd(bytes: Uint8Array, what: string): Repomd {
  if (bytes.length > MAX_REPOMD_BYTES) {
    throw new SutureError(
      "TOO_LARGE",
      `${what} is ${bytes.length} bytes, more than the ${MAX_REPOMD_BYTES} a repomd.xml may be: ${REPOMD_FIX}`,
    );
  }
  const parser = new SaxesParser({ xmlns: true, position: true });
  const data = new Map<string, RepomdData>();
  let revision: string | undefined;
  let rootSeen = false;
  let current: Partial<RepomdData> & { type?: string; checksumType?: string; openChecksumType?: string } = {};
  let text = "";
  const stack: string[] = [];
  parser.on("error", (e) => {
    throw new SutureError(
      "UNTRUSTED",
      `${what} is not well-formed XML (${describeCause(e)}): ${REPOMD_FIX}`,
      {
        cause: e,
      },
    );
  });
  parser.on("doctype", () => {
    throw new SutureError("UNTRUSTED", `${what} has a DOCTYPE, which repomd.xml never has: ${REPOMD_FIX}`);
  });
  parser.on("opentag", (node) => {
    stack.push(node.local);
    text = "";
    if (stack.length === 1) {
      if (node.local !== "repomd" || node.uri !== REPO_NS) {
        throw new SutureError(
          "UNTRUSTED",
          `${what} is not a repomd.xml (its root element is ${quoteUntrusted(node.name)}): ${REPOMD_FIX}`,
        );
      }
      rootSeen = true;
      return;
    }
    if (stack.length === 2 && node.local === "data") {
      current = { type: attr(node, "type") };
      return;
    }
    if (stack.length === 3 && stack[1] === "data") {
      if (node.local === "checksum") current.checksumType = attr(node, "type");
      else if (node.local === "open-checksum") current.openChecksumType = attr(node, "type");
      else if (node.local === "location") {
        if (attr(node, "xml:base") !== undefined) {
          throw new SutureError(
            "UNTRUSTED",
            `${what} points a ${quoteUntrusted(current.type ?? "")} file at another location with xml:base: ${REPOMD_FIX}`,
          );
        }
        current.location = attr(node, "href") ?? "";
      }
    }
  });
  parser.on("text", (t) => {
    if (text.length < 4096) text += t;
  });
  parser.on("closetag", (node) => {
    const depth = stack.length;
    stack.pop();
    if (depth === 2 && node.local === "revision") revision = text.trim();
    if (depth === 3 && stack[1] === "data") {
      const where = `${what} (${quoteUntrusted(current.type ?? "")} entry)`;
      if (node.local === "checksum") current.checksum = repoChecksum(current.checksumType, text, where);
      else if (node.local === "open-checksum")
        current.openChecksum = repoChecksum(current.openChecksumType, text, where);
      else if (node.local === "size") current.size = nonNegativeInteger(text, `${where} size`);
      else if (node.local === "open-size") current.openSize = nonNegativeInteger(text, `${where} open-size`);
    }
    if (depth === 2 && node.local === "data") {
      const type = current.type;
      if (!type || !/^[A-Za-z0-9_.-]{1,64}$/.test(type)) {
        throw new SutureError(
          "UNTRUSTED",
          `${what} has a data entry of type ${quoteUntrusted(type ?? "(none)")}: ${REPOMD_FIX}`,
        );
      }
      const where = `${what} (${type} entry)`;
      if (data.has(type)) throw new SutureError("UNTRUSTED", `${where} is listed twice: ${REPOMD_FIX}`);
      if (!current.checksum) throw new SutureError("UNTRUSTED", `${where} has no checksum: ${REPOMD_FIX}`);
      data.set(type, {
        type,
        checksum: current.checksum,
        location: repoLocation(current.location, where, REPOMD_FIX),
        ...(current.openChecksum ? { openChecksum: current.openChecksum } : {}),
        ...(current.size !== undefined ? { size: current.size } : {}),
        ...(current.openSize !== undefined ? { openSize: current.openSize } : {}),
      });
    }
  });
  try {
    parser.write(Buffer.from(bytes).toString("utf8")).close();
  } catch (e) {
    if (e instanceof SutureError) throw e;
    throw new SutureError(
      "UNTRUSTED",
      `${what} is not well-formed XML (${describeCause(e)}): ${REPOMD_FIX}`,
      {
        cause: e,
      },
    );
  }
  if (!rootSeen) throw new SutureError("UNTRUSTED", `${what} is empty: ${REPOMD_FIX}`);
  return { ...(revision ? { revision } : {}), data };
}

/** The entry of `type` (`primary`), or UNTRUSTED naming what is missing. */
export function repomdEntry(repomd: Repomd, type: string, what: string): RepomdData {
  const entry = repomd.data.get(type);
  if (!entry) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} lists no ${type} metadata (it has ${[...repomd.data.keys()].join(", ") || "none"}): ${REPOMD_FIX}`,
    );
  }
  return entry;
}

/**
 * Check `repomd.xml.asc`, the detached OpenPGP signature dnf checks with `repo_gpgcheck=1`,
 * against the repository's keys (its `gpgkey=` files). A missing signature, one by a key outside
 * `keyring`, or one that does not verify: UNTRUSTED naming `what` and the fix.
 */
export async function verifyRepomdSignature(
  repomd: Uint8Array,
  signature: Uint8Array | undefined,
  keyring: Keyring,
  options: { what: string; now?: Date },
): Promise<Signer[]> {
  if (signature === undefined || signature.length === 0) {
    throw new SutureError(
      "UNTRUSTED",
      `${options.what} has no repomd.xml.asc signature but the repository sets repo_gpgcheck=1: the mirror serves unsigned metadata; use a mirror that publishes repomd.xml.asc`,
    );
  }
  if (!keyring.keys.length) {
    throw new SutureError(
      "UNTRUSTED",
      `no keys to check ${options.what}'s signature with: the repository sets repo_gpgcheck=1 but names no gpgkey the image has; add its key (gpgkey=file:///etc/pki/rpm-gpg/…)`,
    );
  }
  return verifyDetached(repomd, signature, keyring, {
    what: options.what,
    unknownKeyFix:
      "add the repository's key to the image and name it with gpgkey=, or check that baseurl is right",
    ...(options.now ? { now: options.now } : {}),
  });
}
