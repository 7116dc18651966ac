import type { Readable } from "node:stream";
import { SaxesParser } from "saxes";
import { decompress } from "../../archive/compression.ts";
import { describeCause, isSutureError, SutureError } from "../../errors/errors.ts";
import { VerifyingStream, verifyAlongside } from "../../stream/verifying-stream.ts";
import { metadataCompression } from "./primary.ts";
import type { RepomdData } from "./repomd.ts";

/**
 * A repository's `filelists.xml`: every file of every package, which dnf reads only when a
 * dependency names a path primary.xml does not list (primary carries /etc and the bin
 * directories). Streamed and checked against repomd.xml's checksum as readPrimary is; only the
 * paths asked for are kept, by package checksum (`pkgid`).
 */

export interface ReadFilelistsOptions {
  /** What is read (its URL), for messages. */
  what: string;
  /** The paths to look for. */
  wanted: ReadonlySet<string>;
  /** Most decompressed bytes accepted (default 4 GiB; Fedora's are about 1 GB). */
  maxBytes?: number;
  signal?: AbortSignal;
}

const FIX = "the repository's metadata is broken or was tampered with; use another mirror";
const NS = "http://linux.duke.edu/metadata/filelists";

/** Package checksum (`pkgid`, lower-case hex) → the wanted paths it has. UNTRUSTED on any mismatch or malformed XML. */
export async function readFilelists(
  input: Readable,
  entry: RepomdData,
  options: ReadFilelistsOptions,
): Promise<Map<string, string[]>> {
  const { what } = options;
  const verifier = new VerifyingStream(
    { sha256: entry.checksum.value, algorithm: entry.checksum.type, size: entry.size ?? -1 },
    {
      tooLarge: (size) =>
        new SutureError("UNTRUSTED", `${what} is larger than the ${size} bytes repomd.xml lists: ${FIX}`),
      sizeMismatch: (actual, size) =>
        new SutureError("UNTRUSTED", `${what} is ${actual} bytes but repomd.xml lists ${size}: ${FIX}`),
      digestMismatch: (actual) =>
        new SutureError(
          "UNTRUSTED",
          `${what} has ${entry.checksum.type} ${actual} but repomd.xml lists ${entry.checksum.value}: ${FIX}`,
        ),
    },
  );
  const { copy, verified, settle } = verifyAlongside(input, verifier);
  const found = new Map<string, string[]>();
  const sax = new SaxesParser({ xmlns: true });
  let depth = 0;
  let pkgid: string | undefined;
  let text: string | undefined;
  const bad = (why: string) => new SutureError("UNTRUSTED", `${what} ${why}: ${FIX}`);
  sax.on("error", (e) => {
    throw bad(`is not well-formed XML (${describeCause(e)})`);
  });
  sax.on("doctype", () => {
    throw bad("has a DOCTYPE, which filelists.xml never has");
  });
  sax.on("opentag", (node) => {
    depth++;
    if (depth === 1 && (node.local !== "filelists" || node.uri !== NS)) throw bad("is not a filelists.xml");
    if (depth === 2 && node.local === "package") {
      const id = node.attributes.pkgid?.value?.toLowerCase();
      if (!id || !/^[0-9a-f]{40,128}$/.test(id)) throw bad("has a package without a valid pkgid");
      pkgid = id;
    }
    if (depth === 3 && node.local === "file") text = "";
  });
  sax.on("text", (t) => {
    if (text === undefined) return;
    if (text.length + t.length > 16 * 1024) throw bad("has a path longer than 16384 characters");
    text += t;
  });
  sax.on("closetag", () => {
    if (depth === 3 && text !== undefined) {
      if (pkgid && options.wanted.has(text)) {
        const list = found.get(pkgid);
        if (list) list.push(text);
        else found.set(pkgid, [text]);
      }
      text = undefined;
    }
    if (depth === 2) pkgid = undefined;
    depth--;
  });
  try {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    for await (const piece of decompress(copy, metadataCompression(entry.location), {
      what,
      maxBytes: Math.min(options.maxBytes ?? 4 * 1024 ** 3, entry.openSize ?? Number.POSITIVE_INFINITY),
      fix: FIX,
      ...(options.signal ? { signal: options.signal } : {}),
    }))
      sax.write(decoder.decode(piece, { stream: true }));
    sax.write(decoder.decode());
    sax.close();
    if (depth !== 0) throw bad("ends early");
  } catch (e) {
    if (!options.signal?.aborted && !isSutureError(e, "UNTRUSTED")) await settle();
    input.destroy();
    throw isSutureError(e) || options.signal?.aborted
      ? e
      : new SutureError("UNTRUSTED", `${what} is not valid UTF-8 XML (${describeCause(e)}): ${FIX}`, {
          cause: e,
        });
  }
  await verified;
  return found;
}
