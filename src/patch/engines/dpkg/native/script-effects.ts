import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { writeFileReplacing } from "../../../../distro/dpkg/database.ts";
import { readFileInRoot, resolveInRoot } from "../../../../fs/in-root.ts";

/**
 * What some maintainer scripts do, done natively for images that cannot run them (no shell).
 * Only effects that are pure functions of files are reproduced; each says what it stands for.
 */

const CERTS_DIR = "/usr/share/ca-certificates";
const LOCAL_CERTS_DIR = "/usr/local/share/ca-certificates";
const CERTS_CONF = "/etc/ca-certificates.conf";
const BUNDLE_DIR = "/etc/ssl/certs";
const BUNDLE = "ca-certificates.crt";

/**
 * ca-certificates' postinst (update-ca-certificates): without it an upgraded ca-certificates
 * changes nothing, because programs read the generated bundle, not the package's files. Selection
 * as the postinst leaves it: every certificate the package ships, except those the image's
 * `/etc/ca-certificates.conf` deselects with `!` (certificates new in this version are trusted,
 * the package's default), in byte order; then the administrator's own certificates from
 * `/usr/local/share/ca-certificates`. Each file is appended with a newline added when missing.
 * Only images that already carry a bundle get one; the conf is rewritten only if it exists.
 * Returns whether anything was written.
 */
export async function regenerateCaBundle(root: string): Promise<boolean> {
  const bundleDir = await resolveInRoot(root, BUNDLE_DIR);
  const hadBundle = bundleDir !== undefined && (await isFile(join(bundleDir, BUNDLE)));
  const confBytes = await readFileInRoot(root, CERTS_CONF);
  if (!bundleDir || (!hadBundle && !confBytes)) return false;

  const shipped = (await findCrt(root, CERTS_DIR)).sort(byteOrder);
  const confLines = confBytes ? confBytes.toString("utf8").split("\n") : [];
  const deselected = new Set(confLines.filter((l) => l.startsWith("!")).map((l) => l.slice(1).trim()));
  const selected = shipped.filter((c) => !deselected.has(c));

  const parts: Buffer[] = [];
  const append = (pem: Buffer) => {
    parts.push(pem);
    if (pem.length && pem[pem.length - 1] !== 0x0a) parts.push(Buffer.from("\n"));
  };
  for (const c of selected) append((await readFileInRoot(root, `${CERTS_DIR}/${c}`))!);
  for (const c of (await findCrt(root, LOCAL_CERTS_DIR))
    .map((c) => `${LOCAL_CERTS_DIR}/${c}`)
    .sort(byteOrder)) {
    append((await readFileInRoot(root, c))!);
  }
  await writeFileReplacing(join(bundleDir, BUNDLE), Buffer.concat(parts), 0o644);

  if (confBytes) {
    const header = confLines.filter((l) => l.startsWith("#"));
    const body = shipped.map((c) => (deselected.has(c) ? `!${c}` : c));
    const confHost = await resolveInRoot(root, CERTS_CONF);
    if (confHost)
      await writeFileReplacing(confHost, Buffer.from(`${[...header, ...body].join("\n")}\n`), 0o644);
  }
  return true;
}

/** `*.crt` files under `dir` (symlinks followed inside the root), as paths relative to `dir`. */
async function findCrt(root: string, dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    const host = await resolveInRoot(root, rel ? `${dir}/${rel}` : dir);
    if (!host) return;
    let names: string[];
    try {
      names = await readdir(host);
    } catch {
      return;
    }
    for (const name of names) {
      const relPath = rel ? `${rel}/${name}` : name;
      const resolved = await resolveInRoot(root, `${dir}/${relPath}`);
      if (!resolved) continue;
      const st = await stat(resolved).catch(() => undefined);
      if (st?.isDirectory()) await walk(relPath);
      else if (st?.isFile() && name.endsWith(".crt")) out.push(relPath);
    }
  };
  await walk("");
  return out;
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

/** `sort` in the C locale, as the postinst's shell pipeline runs. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
