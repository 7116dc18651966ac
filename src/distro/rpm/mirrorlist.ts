import { SaxesParser } from "saxes";
import { describeCause, quoteUntrusted, SutureError } from "../../errors/errors.ts";
import type { RepoChecksum } from "./repomd.ts";

/**
 * Where a repository that names no baseurl is: a `mirrorlist=` (a text file of base URLs, one a
 * line: Rocky, Alma, Amazon Linux 2023) or a `metalink=` (Fedora, CentOS Stream, EPEL: an XML
 * list of repomd.xml URLs with the hashes the current repomd.xml may have). Both are unsigned
 * documents from the distribution's mirror manager, so they only say where to look: repomd.xml
 * is still checked as the repository requires, and a metalink's hashes are one more check on it,
 * as dnf makes.
 */

/** Most bytes of a mirrorlist or metalink accepted (Fedora's are a few tens of KiB). */
export const MAX_MIRRORLIST_BYTES = 4 * 1024 * 1024;

const FIX =
  "the mirror list is broken or hostile; set a baseurl= in the image's repository file, or use --mirror";

/** The http(s) base URLs a mirrorlist lists, in its order (comments and blank lines skipped). */
export function parseMirrorlist(text: string, what: string): string[] {
  const urls: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (!/^https?:\/\/[^\s]+$/i.test(line))
      throw new SutureError("UNTRUSTED", `${what} lists ${quoteUntrusted(line)}, not an http(s) URL: ${FIX}`);
    urls.push(line.replace(/\/+$/, ""));
  }
  if (!urls.length) throw new SutureError("NOT_FOUND", `${what} lists no mirror: ${FIX}`);
  return urls;
}

export interface Metalink {
  /** Base URLs (the `…/repodata/repomd.xml` part cut off), most preferred first. */
  baseUrls: string[];
  /** The hashes repomd.xml may have (the current one and recent alternates). */
  hashes: RepoChecksum[];
}

/**
 * A metalink for `repomd.xml` (metalink 3.0 as MirrorManager serves it): its http(s) `<url>`s by
 * preference, and the `<hash>`es of repomd.xml. Malformed XML, a DOCTYPE or no usable URL:
 * UNTRUSTED/NOT_FOUND naming `what`.
 */
export function parseMetalink(text: string, what: string): Metalink {
  const parser = new SaxesParser({ xmlns: false });
  const urls: { url: string; preference: number; order: number }[] = [];
  const hashes: RepoChecksum[] = [];
  let inRepomd = false;
  let current: { kind: "url" | "hash"; attrs: Record<string, string>; text: string } | undefined;
  parser.on("doctype", () => {
    throw new SutureError("UNTRUSTED", `${what} has a DOCTYPE, which a metalink never has: ${FIX}`);
  });
  parser.on("opentag", (node) => {
    const attrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(node.attributes)) attrs[k] = String(v);
    if (node.name === "file") inRepomd = attrs.name === "repomd.xml";
    else if (inRepomd && (node.name === "url" || node.name === "hash"))
      current = { kind: node.name, attrs, text: "" };
  });
  parser.on("text", (t) => {
    if (current && current.text.length < 4096) current.text += t;
  });
  parser.on("closetag", (node) => {
    if (node.name === "file") inRepomd = false;
    if (!current || node.name !== current.kind) return;
    const value = current.text.trim();
    if (current.kind === "url") {
      const m = /^(https?:\/\/[^\s]+?)\/?repodata\/repomd\.xml$/i.exec(value);
      if (m)
        urls.push({
          url: m[1]!.replace(/\/+$/, ""),
          preference: Number(current.attrs.preference ?? 0) || 0,
          order: urls.length,
        });
    } else {
      const type = current.attrs.type;
      const hex = value.toLowerCase();
      const length = { sha1: 40, sha256: 64, sha512: 128 }[type ?? ""];
      if (length !== undefined && new RegExp(`^[0-9a-f]{${length}}$`).test(hex))
        hashes.push({ type: type as RepoChecksum["type"], value: hex });
    }
    current = undefined;
  });
  try {
    parser.write(text).close();
  } catch (e) {
    if (e instanceof SutureError) throw e;
    throw new SutureError("UNTRUSTED", `${what} is not well-formed XML (${describeCause(e)}): ${FIX}`, {
      cause: e,
    });
  }
  if (!urls.length)
    throw new SutureError("NOT_FOUND", `${what} lists no http(s) mirror of repomd.xml: ${FIX}`);
  urls.sort((a, b) => b.preference - a.preference || a.order - b.order);
  return { baseUrls: [...new Set(urls.map((u) => u.url))], hashes };
}
