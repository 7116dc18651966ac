import { ByteReader, type ByteSource } from "../../archive/tar/read.ts";
import { quoteUntrusted, SutureError } from "../../errors/errors.ts";

/**
 * The cpio archives inside .rpm payloads (rpm's lib/cpio.c), read as a stream, member by member:
 *
 * - SVR4 "newc" (`070701`): a 110-byte header of the magic and 13 eight-digit hex fields (ino,
 *   mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
 *   check), the NUL-terminated name, padding to 4 bytes, the data, padding to 4 bytes;
 * - rpm ≥ 4.12's stripped form (`07070X`), used for packages with files of 4 GiB or more: the
 *   magic and one 8-digit hex field, the index of the file in the header's file arrays (which
 *   hold its name, mode and size), padding to 4, the data, padding to 4.
 *
 * Either ends with a newc member named `TRAILER!!!`. Sizes are bounded by the caller.
 */

export interface CpioMember {
  /** newc: the name as recorded (`./usr/bin/ls`). Absent for a stripped member. */
  name?: string;
  /** Stripped form: the index into the header's file arrays. */
  fileIndex?: number;
  /** newc only (a stripped member's metadata is the header's). */
  mode?: number;
  uid?: number;
  gid?: number;
  nlink?: number;
  mtime?: number;
  ino?: number;
  rdevMajor?: number;
  rdevMinor?: number;
  /** Bytes of data. */
  size: number;
  /** The data; consume it before asking for the next member (what is left unread is skipped). */
  body: AsyncIterable<Buffer>;
}

export interface ReadCpioOptions {
  /** What is read, for messages (`the payload of foo-1.0-1.x86_64.rpm`). */
  what: string;
  /** A stripped member's data size, from the header (LONGFILESIZES/FILESIZES); undefined: no such file. */
  strippedSize?: (fileIndex: number) => number | undefined;
}

const NEWC_MAGIC = "070701";
const NEWC_CRC_MAGIC = "070702";
const STRIPPED_MAGIC = "07070X";
const NEWC_HEADER = 110;
const STRIPPED_HEADER = 14;
const TRAILER = "TRAILER!!!";
/** rpm's own limit on a path in a payload (PATH_MAX). */
const MAX_NAME = 4096;

const pad4 = (n: number) => (4 - (n % 4)) % 4;

function invalid(what: string, detail: string): SutureError {
  return new SutureError(
    "INVALID_ARCHIVE",
    `${what} is not a valid cpio archive: ${detail}; the package is damaged or hostile, use another mirror`,
  );
}

/**
 * Read a cpio stream (newc or rpm's stripped form). Malformed headers, names without their NUL,
 * and data cut short are INVALID_ARCHIVE naming `what`. After the trailer the rest of the input
 * is read, so digests computed upstream cover every byte.
 */
export async function* readCpio(source: ByteSource, options: ReadCpioOptions): AsyncGenerator<CpioMember> {
  const what = options.what;
  const reader = new ByteReader(source, {
    record: () => invalid(what, "it ends inside a member header"),
    data: () => invalid(what, "it ends inside a member's data"),
  });
  let offset = 0;
  const read = async (n: number, detail: string) => {
    const bytes = await reader.read(n);
    if (bytes === null) throw invalid(what, detail);
    offset += n;
    return bytes;
  };
  const skip = async (n: number) => {
    if (n > 0) await reader.skip(n);
    offset += n;
  };
  for (;;) {
    await skip(pad4(offset));
    const magic = (await read(6, "it ends without a TRAILER!!! member")).toString("latin1");
    let member: Omit<CpioMember, "body">;
    if (magic === NEWC_MAGIC || magic === NEWC_CRC_MAGIC) {
      const head = (await read(NEWC_HEADER - 6, "it ends inside a member header")).toString("latin1");
      const fields: number[] = [];
      for (let i = 0; i < 13; i++) {
        const hex = head.slice(i * 8, i * 8 + 8);
        if (!/^[0-9A-Fa-f]{8}$/.test(hex))
          throw invalid(what, `a member header has field ${quoteUntrusted(hex)}`);
        fields.push(Number.parseInt(hex, 16));
      }
      // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
      const field = (i: number) => fields[i]!;
      const nameSize = field(11);
      if (nameSize < 2 || nameSize > MAX_NAME)
        throw invalid(what, `a member's name is ${nameSize} bytes long`);
      const raw = await read(nameSize, "it ends inside a member name");
      if (raw[nameSize - 1] !== 0 || raw.indexOf(0) !== nameSize - 1)
        throw invalid(what, "a member's name is not one NUL-terminated string");
      const name = raw.subarray(0, nameSize - 1).toString("utf8");
      await skip(pad4(offset));
      if (name === TRAILER) {
        await reader.drain();
        return;
      }
      member = {
        name,
        ino: field(0),
        mode: field(1),
        uid: field(2),
        gid: field(3),
        nlink: field(4),
        mtime: field(5),
        size: field(6),
        rdevMajor: field(9),
        rdevMinor: field(10),
      };
    } else if (magic === STRIPPED_MAGIC) {
      const hex = (await read(STRIPPED_HEADER - 6, "it ends inside a member header")).toString("latin1");
      if (!/^[0-9A-Fa-f]{8}$/.test(hex))
        throw invalid(what, `a stripped member has file index ${quoteUntrusted(hex)}`);
      const fileIndex = Number.parseInt(hex, 16);
      const size = options.strippedSize?.(fileIndex);
      if (size === undefined)
        throw invalid(what, `a stripped member names file ${fileIndex}, which the header does not list`);
      await skip(pad4(offset));
      member = { fileIndex, size };
    } else {
      throw invalid(
        what,
        `a member starts with ${quoteUntrusted(magic)}, not a cpio magic (070701 or 07070X)`,
      );
    }
    let delivered = 0;
    const body = (async function* () {
      for await (const chunk of reader.chunks(member.size)) {
        delivered += chunk.length;
        yield chunk;
      }
    })();
    yield { ...member, body };
    await body.return(undefined);
    await reader.skip(member.size - delivered);
    offset += member.size;
  }
}
