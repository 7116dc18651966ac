import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { Readable } from "node:stream";
import { quoteUntrusted, SutureError } from "../errors/errors.ts";

/** One member of an ar archive (the container format of a .deb). */
export interface ArMember {
  name: string;
  /** Byte offset of the member's data in the archive file. */
  offset: number;
  size: number;
  mtime: number;
  mode: number;
}

const MAGIC = "!<arch>\n";
const HEADER = 60;

/**
 * List the members of an ar archive on disk by reading only the 60-byte headers. Understands
 * System V names (`debian-binary/`) and BSD long names (`#1/LEN`, name stored before the data,
 * which is then excluded from `offset`/`size`). Throws INVALID_ARCHIVE naming `path` when the file
 * is not an ar archive or a header is damaged.
 */
export async function listArMembers(path: string): Promise<ArMember[]> {
  const fh = await open(path, "r");
  try {
    const { size: total } = await fh.stat();
    const head = Buffer.alloc(HEADER);
    const bad = (why: string) =>
      new SutureError("INVALID_ARCHIVE", `${path} is not a valid ar archive (.deb): ${why}`);
    if (
      (await fh.read(head, 0, MAGIC.length, 0)).bytesRead !== MAGIC.length ||
      head.toString("latin1", 0, 8) !== MAGIC
    ) {
      throw bad("missing !<arch> magic");
    }
    const members: ArMember[] = [];
    let pos = MAGIC.length;
    while (pos < total) {
      if (pos + HEADER > total) throw bad(`truncated header at byte ${pos}`);
      await fh.read(head, 0, HEADER, pos);
      if (head[58] !== 0x60 || head[59] !== 0x0a) throw bad(`bad header terminator at byte ${pos}`);
      const text = (from: number, len: number) => head.toString("latin1", from, from + len).trim();
      let name = text(0, 16);
      const mtime = Number.parseInt(text(16, 12) || "0", 10);
      const mode = Number.parseInt(text(40, 8) || "0", 8);
      let size = Number.parseInt(text(48, 10), 10);
      if (!Number.isSafeInteger(size) || size < 0) throw bad(`bad member size at byte ${pos}`);
      let offset = pos + HEADER;
      if (offset + size > total) throw bad(`member ${quoteUntrusted(name)} runs past the end of the file`);
      const bsd = /^#1\/(\d+)$/.exec(name);
      if (bsd) {
        const len = Number(bsd[1]);
        if (len > size) throw bad(`BSD name longer than its member at byte ${pos}`);
        const nameBuf = Buffer.alloc(len);
        await fh.read(nameBuf, 0, len, offset);
        name = nameBuf.toString("utf8").replace(/\0+$/, "");
        offset += len;
        size -= len;
      } else if (name.endsWith("/") && name !== "/" && name !== "//") {
        name = name.slice(0, -1);
      }
      members.push({ name, offset, size, mtime, mode });
      // Member data is padded to an even length.
      pos = pos + HEADER + (bsd ? size + Number(bsd[1]) : size);
      if (pos % 2) pos++;
    }
    return members;
  } finally {
    await fh.close();
  }
}

/** Stream one member's data. */
export function openArMember(path: string, member: ArMember): Readable {
  if (member.size === 0) return Readable.from([]);
  return createReadStream(path, { start: member.offset, end: member.offset + member.size - 1 });
}
