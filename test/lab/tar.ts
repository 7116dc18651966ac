/**
 * Test-only tar helpers: archives from simple specs (written by our writer, names exactly as
 * given, so tests can also write hostile ones), and an independent reader (Python's tarfile) to
 * check what our writer produced without trusting our own decoder.
 */
import { execFile } from "node:child_process";
import type { TarEntryType } from "../../src/archive/tar/entry.ts";
import { type TarWriteEntry, tarPadding, writeTar } from "../../src/archive/tar/write.ts";

export interface EntrySpec {
  /** Written exactly as given (a directory's trailing `/` is optional). */
  name: string;
  type?: TarEntryType;
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Seconds since the epoch (default 1_700_000_000). */
  mtime?: number;
  /** Extended attributes (SCHILY.xattr.* PAX records). */
  xattrs?: Record<string, string | Buffer>;
}

export const MTIME = 1_700_000_000;

/** An uncompressed tar with exactly these entries, in this order. */
export async function tarOf(entries: EntrySpec[]): Promise<Buffer> {
  const written = entries.map((e): TarWriteEntry => {
    const type = e.type ?? "file";
    const content = Buffer.from(e.content ?? "");
    return {
      // The writer adds a directory's trailing slash itself.
      path: type === "directory" ? e.name.replace(/\/$/, "") : e.name,
      type,
      mode: e.mode ?? (type === "directory" ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: e.mtime ?? MTIME,
      linkname: e.linkname,
      devmajor: e.devmajor,
      devminor: e.devminor,
      xattrs: new Map(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, Buffer.from(v)])),
      size: content.length,
      body: () => [content],
    };
  });
  const chunks: Buffer[] = [];
  for await (const c of writeTar(written)) chunks.push(c);
  return Buffer.concat(chunks);
}

const BLOCK = 512;

/**
 * A raw ustar header block with a correct checksum, for header kinds our writer never emits (GNU
 * long names `L`/`K`, global PAX `g`, volume labels); `gnu` writes GNU tar's magic.
 */
export function rawHeader(name: string, flag: string, size: number, gnu = false): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(name, 0, 100, "utf8");
  b.write("0000644\0", 100, "latin1");
  b.write("0000000\0", 108, "latin1");
  b.write("0000000\0", 116, "latin1");
  b.write(`${size.toString(8).padStart(11, "0")}\0`, 124, "latin1");
  b.write("00000000000\0", 136, "latin1");
  b.write(flag, 156, "latin1");
  b.write(gnu ? "ustar  \0" : "ustar\x0000", 257, "latin1");
  return fixChecksum(b);
}

/** Recompute a header block's checksum in place (after a test edited its fields). */
export function fixChecksum(block: Buffer): Buffer {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += block[i]!;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return block;
}

/** A header followed by its data, padded to whole blocks. */
export function withData(header: Buffer, data: Buffer): Buffer {
  return Buffer.concat([header, data, tarPadding(data.length)]);
}

/** A member as Python's tarfile reads it. */
export interface ListedMember {
  /** As recorded; directories end in `/` (tarfile strips it, we put it back). */
  name: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: string;
  size: number;
  uname: string;
  /** Every PAX record of the member, values as bytes. */
  pax: Map<string, Buffer>;
  /** The data (empty unless asked for with `bodies`). */
  body: Buffer;
}

const PYTHON_LIST = `
import base64, json, sys, tarfile
types = {b"0": "file", b"\\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"3": "char",
         b"4": "block", b"5": "directory", b"6": "fifo"}
bodies = sys.argv[1] == "1"
out = []
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as archive:
    for m in archive:
        body = archive.extractfile(m).read() if bodies and m.isfile() else b""
        out.append({"name": m.name + ("/" if m.isdir() else ""), "type": types.get(m.type, repr(m.type)),
                    "mode": m.mode, "uid": m.uid, "gid": m.gid, "mtime": m.mtime, "linkname": m.linkname,
                    "size": m.size, "uname": m.uname,
                    "pax": {k: v.encode("utf-8", "surrogateescape").hex() for k, v in m.pax_headers.items()},
                    "body": base64.b64encode(body).decode()})
json.dump(out, sys.stdout)
`;

/** The members of an uncompressed tar as Python's tarfile (an independent reader) sees them. */
export function listTar(bytes: Buffer, options: { bodies?: boolean } = {}): Promise<ListedMember[]> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      "python3",
      ["-c", PYTHON_LIST, options.bodies ? "1" : "0"],
      { maxBuffer: 1 << 30, encoding: "utf8" },
      (error, stdout) => {
        if (error) return reject(error);
        const raw = JSON.parse(stdout) as (Omit<ListedMember, "pax" | "body"> & {
          pax: Record<string, string>;
          body: string;
        })[];
        resolve(
          raw.map((m) => ({
            ...m,
            pax: new Map(Object.entries(m.pax).map(([k, v]) => [k, Buffer.from(v, "hex")])),
            body: Buffer.from(m.body, "base64"),
          })),
        );
      },
    );
    child.stdin!.end(bytes);
  });
}
