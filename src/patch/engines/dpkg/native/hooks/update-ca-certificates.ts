import { createHash } from "node:crypto";
import { lstatSync, opendirSync, readdirSync, readlinkSync, rmSync, type Stats, symlinkSync } from "node:fs";
import { join } from "node:path";
import { writeFileReplacing } from "../../../../../distro/dpkg/database.ts";
import {
  childPath,
  foundInRoot,
  readFileInRootSync,
  resolveInRootSync,
  walkInRoot,
} from "../../../../../fs/in-root.ts";
import { certificateSubject, DerError, subjectNameHash } from "./x509-name-hash.ts";

/**
 * ca-certificates' `update-ca-certificates` (Debian's shell script, as bookworm ships it), done
 * natively: the `/etc/ssl/certs/<name>.pem` links to the selected certificates, the bundle, and —
 * when a link was added or removed — what its `openssl rehash .` does (orphan links removed, then
 * `<subject-hash>.<n>` links). The script forks several processes per certificate; under QEMU that
 * alone takes minutes. Anything this does not reproduce exactly (hooks to run, a name `read`
 * would mangle, a PEM file it cannot judge the way OpenSSL would) is reported as `unsupported`
 * before anything is written, and the caller runs the real script instead.
 */

const CERTSCONF = "/etc/ca-certificates.conf";
const CERTSDIR = "/usr/share/ca-certificates";
const LOCALCERTSDIR = "/usr/local/share/ca-certificates";
const ETCCERTSDIR = "/etc/ssl/certs";
const CERTBUNDLE = "ca-certificates.crt";
const HOOKSDIR = "/etc/ca-certificates/update.d";

export type CaUpdateResult =
  | { done: true; added: number; removed: number }
  | { done: false; unsupported: string };

class Unsupported extends Error {}

/** Run update-ca-certificates' effect for one recorded invocation (`args` as the script got them). */
export async function updateCaCertificates(root: string, args: readonly string[]): Promise<CaUpdateResult> {
  try {
    return { done: true, ...(await update(root, args)) };
  } catch (e) {
    if (e instanceof Unsupported) return { done: false, unsupported: e.message };
    throw e;
  }
}

async function update(root: string, args: readonly string[]): Promise<{ added: number; removed: number }> {
  let fresh = false;
  let hooksDir = HOOKSDIR;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--fresh" || a === "-f") fresh = true;
    else if (a === "--verbose" || a === "-v") continue;
    else if (a === "--hooksdir" && i + 1 < args.length) hooksDir = args[++i]!;
    else throw new Unsupported(`argument ${JSON.stringify(a)}`);
  }
  // The hooks (ca-certificates-java's keystore, …) are other programs: run for real when any exist.
  if (hooksDir !== "") {
    if (hooksDir !== HOOKSDIR) throw new Unsupported(`hooks directory ${hooksDir}`);
    const hooks = resolveInRootSync(root, HOOKSDIR);
    if (hooks && listOrEmpty(hooks).length) throw new Unsupported(`hooks in ${HOOKSDIR}`);
  }

  const etc = walkInRoot(root, ETCCERTSDIR, { followFinal: false, mustExist: true });
  if (etc.kind !== "found" || !etc.stat.isDirectory())
    throw new Unsupported(`${ETCCERTSDIR} is not a directory`);
  const certsDir = etc.host;
  // Per-entry work below is synchronous: a threadpool round trip per lstat, readlink or small
  // read cost more than the work, over the few hundred entries of /etc/ssl/certs.
  const entries = () => readdirSync(certsDir).sort(byteOrder);
  for (const name of entries())
    if (lstatSync(join(certsDir, name)).isDirectory())
      throw new Unsupported(`directory ${ETCCERTSDIR}/${name}`);
  if (lstatOrUndefined(join(certsDir, `${CERTBUNDLE}.new`)))
    throw new Unsupported(`a leftover ${CERTBUNDLE}.new`);

  const confBytes = readFileInRootSync(root, CERTSCONF);
  if (!confBytes?.length) fresh = true;
  const confText = confBytes?.toString("utf8") ?? "";
  if (confBytes && !Buffer.from(confText).equals(confBytes))
    throw new Unsupported("ca-certificates.conf is not UTF-8");
  const confLines = splitLines(confText);
  const readName = (line: string) => {
    // `while read crt` strips surrounding whitespace and backslashes; names with them are rare enough to run for real.
    if (line.includes("\\")) throw new Unsupported("a backslash in ca-certificates.conf");
    return line.replace(/^[ \t\n]+|[ \t\n]+$/g, "");
  };
  const linkPath = (name: string) => childPath(certsDir, name, "certificate link");
  const exists = (name: string) => resolveInRootSync(root, `${ETCCERTSDIR}/${name}`) !== undefined;
  const isLink = (name: string) => lstatOrUndefined(linkPath(name))?.isSymbolicLink() ?? false;

  if (fresh) {
    for (const name of entries()) {
      if (!isLink(name)) continue;
      const target = readlinkSync(linkPath(name));
      if (target.startsWith(CERTSDIR) || target.startsWith(LOCALCERTSDIR)) rmSync(linkPath(name));
    }
    for (const name of entries()) if (isLink(name) && !exists(name)) rmSync(linkPath(name));
  }

  let added = 0;
  let removed = 0;
  const bundle: Buffer[] = [];
  let bundleStarted = false;
  const add = (cert: string, justFound: boolean) => {
    const base = basenameWithout(cert, ".crt");
    const pem = `${base.replace(/ /g, "_").replace(/[()]/g, "=").replace(/,/g, "_")}.pem`;
    const path = linkPath(pem);
    // The script's `[ -e ]` test is asked only of a certificate not just found to be a file: a link
    // naming one that was resolves (a resolution per certificate and call saved).
    if (!(isLink(pem) && readlinkSync(path) === cert && (justFound || exists(pem)))) {
      // `ln -sf` into an existing directory (or a link to one) makes the link inside it.
      if (foundInRoot(root, `${ETCCERTSDIR}/${pem}`)?.stat.isDirectory())
        throw new Unsupported(`directory ${pem}`);
      rmSync(path, { force: true });
      symlinkSync(cert, path);
      added++;
    }
    bundleStarted = true;
    const bytes = readFileInRootSync(root, cert) ?? Buffer.alloc(0);
    bundle.push(bytes);
    if (bytes.length && bytes[bytes.length - 1] !== 0x0a) bundle.push(Buffer.from("\n"));
  };

  // Validate every name first, so nothing is written when the script must run for real.
  const deselected = confLines.filter((l) => l !== "" && l.startsWith("!")).map((l) => readName(l.slice(1)));
  if (deselected.includes("")) throw new Unsupported("an empty `!` line in ca-certificates.conf");
  const selected = confLines
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("!"))
    .map(readName);
  const local = findCrt(root, LOCALCERTSDIR).sort(byteOrder);

  for (const crt of deselected) {
    const pem = `${basenameWithout(`${CERTSDIR}/${crt}`, ".crt")}.pem`;
    if (isLink(pem)) {
      rmSync(linkPath(pem), { force: true });
      removed++;
    }
  }
  for (const crt of selected) {
    const cert = `${CERTSDIR}/${crt}`;
    if (!foundInRoot(root, cert)?.stat.isFile()) continue; // the script warns and goes on
    add(cert, true);
  }
  // Found before the links above were made; one could lead through them.
  for (const cert of local) add(cert, false);

  if (added > 0 || removed > 0) {
    for (const name of entries()) if (isLink(name) && !exists(name)) rmSync(linkPath(name));
    rehash(root, certsDir, directoryOrder(certsDir));
  }
  if (bundleStarted) await writeFileReplacing(join(certsDir, CERTBUNDLE), Buffer.concat(bundle), 0o644);
  return { added, removed };
}

/** The shell's lines: `read` sees the text after the last newline too. */
function splitLines(text: string): string[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

/** `basename PATH SUFFIX`. */
function basenameWithout(path: string, suffix: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return base.endsWith(suffix) && base !== suffix ? base.slice(0, -suffix.length) : base;
}

/** `find -L DIR -type f -name '*.crt'`: image paths, symlinks followed inside the root. */
function findCrt(root: string, dir: string): string[] {
  const out: string[] = [];
  const walk = (path: string, depth: number) => {
    if (depth > 32) throw new Unsupported(`${dir} nests too deep`);
    const found = foundInRoot(root, path);
    if (!found?.stat.isDirectory()) return;
    for (const name of readdirSync(found.host)) {
      const child = `${path}/${name}`;
      if (name.includes("\n") || name.includes("\\"))
        throw new Unsupported(`the file name ${JSON.stringify(child)}`);
      const st = foundInRoot(root, child)?.stat;
      if (!st) continue;
      if (st.isDirectory()) walk(child, depth + 1);
      else if (st.isFile() && name.endsWith(".crt")) out.push(child);
    }
  };
  walk(dir, 0);
  return out;
}

/** What `openssl rehash` (OpenSSL 3's apps/rehash.c) finds in one directory entry. */
interface HashEntry {
  filename: string;
  oldId: number;
  needLink: boolean;
  digest?: string;
}

const HASH_LINK = /^([0-9a-fA-F]{8})\.([rR]?)([0-9]*)$/;
const NO_ID = 0xffff;

/**
 * `openssl rehash DIR`: existing `<hash>.<n>` links are kept where still right, new ones get the
 * lowest free number per hash, and links nothing needs any more are removed. Entries are visited in
 * directory order (see directoryOrder); a duplicate certificate (same SHA-1 fingerprint) gets no link.
 */
function rehash(root: string, certsDir: string, names: string[]): void {
  const buckets = new Map<string, { hash: string; type: "" | "r"; entries: HashEntry[]; needed: number }>();
  const entryFor = (b: { entries: HashEntry[] }, filename: string): HashEntry => {
    const found = b.entries.find((e) => e.filename === filename);
    if (found) return found;
    const entry: HashEntry = { filename, oldId: NO_ID, needLink: false };
    b.entries.push(entry);
    return entry;
  };
  const bucket = (hash: string, type: "" | "r") => {
    const key = `${type}${hash}`;
    const b = buckets.get(key) ?? { hash, type, entries: [], needed: 0 };
    buckets.set(key, b);
    return b;
  };
  for (const name of names) {
    const path = join(certsDir, name);
    const st = lstatOrUndefined(path);
    if (!st) continue;
    const m = st.isSymbolicLink() ? HASH_LINK.exec(name) : null;
    if (m) {
      const id = m[3] === "" ? 0 : Number(m[3]);
      const b = bucket(m[1]!.toLowerCase(), m[2] ? "r" : "");
      const target = readlinkSync(path);
      const entry = entryFor(b, target);
      entry.oldId = Math.min(entry.oldId, id);
      continue;
    }
    const ext = name.includes(".") ? name.slice(name.lastIndexOf(".") + 1).toLowerCase() : "";
    if (!["pem", "crt", "cer", "crl"].includes(ext)) continue;
    const bytes = readFileInRootSync(root, `${ETCCERTSDIR}/${name}`);
    if (!bytes) continue;
    const der = singleCertificate(bytes, name);
    if (!der) continue; // rehash skips it ("does not contain exactly one certificate or CRL")
    let hash: string;
    try {
      hash = subjectNameHash(certificateSubject(der));
    } catch (e) {
      if (e instanceof DerError)
        throw new Unsupported(`${name} is not a certificate suture can read (${e.message})`);
      throw e;
    }
    const digest = createHash("sha1").update(der).digest("hex");
    const b = bucket(hash, "");
    if (b.entries.some((e) => e.digest === digest)) continue; // "skipping duplicate certificate"
    const entry = entryFor(b, name);
    if (!entry.needLink) {
      entry.needLink = true;
      entry.digest = digest;
      b.needed++;
    }
  }
  for (const b of buckets.values()) {
    const used = new Set(b.entries.filter((e) => e.oldId < b.needed).map((e) => e.oldId));
    let next = 0;
    for (const e of b.entries) {
      if (e.oldId < b.needed) continue; // the link exists and is used as it is
      if (e.needLink) {
        while (used.has(next)) next++;
        const link = childPath(certsDir, `${b.hash}.${b.type}${next}`, "hash link");
        rmSync(link, { force: true });
        symlinkSync(e.filename, link);
        used.add(next);
      } else {
        rmSync(childPath(certsDir, `${b.hash}.${b.type}${e.oldId}`, "hash link"), { force: true });
      }
    }
  }
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/**
 * The DER of a file's one certificate, or undefined when rehash would skip the file (no or several
 * certificates). Anything PEM_X509_INFO_read_bio might count differently (CRLs, keys, trusted
 * certificates, PEM headers) is run for real.
 */
function singleCertificate(bytes: Buffer, name: string): Buffer | undefined {
  const text = bytes.toString("latin1");
  const blocks = [...text.matchAll(PEM_BLOCK)];
  if (blocks.length !== (text.match(/-----BEGIN /g) ?? []).length)
    throw new Unsupported(`${name}: unmatched PEM markers`);
  for (const b of blocks) {
    if (b[1] !== "CERTIFICATE") throw new Unsupported(`${name}: a PEM ${b[1]} block`);
    if (b[2]!.includes(":")) throw new Unsupported(`${name}: PEM headers`);
    if (/[^A-Za-z0-9+/=\s]/.test(b[2]!)) throw new Unsupported(`${name}: bad base64`);
  }
  if (blocks.length !== 1) return undefined;
  return Buffer.from(blocks[0]![2]!.replace(/\s+/g, ""), "base64");
}

/**
 * A directory's names in the order readdir(3) returns them. rehash means to sort them but gives its
 * list no comparison function, so it works in this order (node's readdir sorts, opendir does not).
 */
function directoryOrder(dir: string): string[] {
  const names: string[] = [];
  const handle = opendirSync(dir);
  try {
    for (let entry = handle.readSync(); entry; entry = handle.readSync()) names.push(entry.name);
  } finally {
    handle.closeSync();
  }
  return names;
}

/** lstat, or undefined when the path cannot be looked at (missing, mostly): the script's `[ -L ]` is false then. */
function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** A directory's names, or none when it cannot be read (`ls` of a missing hooks directory). */
function listOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** `sort`/`strcmp` order of names. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
