import { readSync } from "node:fs";

/**
 * What glibc 2.36's ldconfig reads from a file it considers a library (`process_file` in
 * elf/readlib.c and `process_elf_file` in elf/readelflib.c with the x86-64 and AArch64 front ends),
 * through positional reads rather than a map of the whole file. The outcome is one of:
 * - `library`: the soname (DT_SONAME, undefined when none) and the x86 ISA level from the
 *   NT_GNU_PROPERTY_TYPE_0 note (only what glibc-hwcaps entries record);
 * - `skip`: ldconfig leaves the file out of the cache (not ELF, not ET_DYN, no dynamic section,
 *   another machine, a pointer past the end that its `check_ptr` catches, a linker script, ...);
 * - `unsupported`: ldconfig would do something this does not reproduce (32-bit and x32
 *   libraries, a.out libraries) or read past the end of the file, where its result is undefined.
 */
export type ElfLibraryReading =
  | { kind: "library"; soname: string | undefined; isaLevel: number }
  | { kind: "skip"; why: string }
  | { kind: "unsupported"; why: string };

export type LdconfigMachine = "x86-64" | "aarch64";

/** ldconfig's FLAG_ELF_LIBC6 with FLAG_X8664_LIB64 / FLAG_AARCH64_LIB64: the only flags written here. */
export const CACHE_FLAGS: Record<LdconfigMachine, number> = { "x86-64": 0x0303, aarch64: 0x0a03 };

const ET_DYN = 3;
const EM_386 = 3;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_GNU_PROPERTY = 0x6474e553;
const DT_NULL = 0n;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;
const DT_SONAME = 14n;
const NT_GNU_PROPERTY_TYPE_0 = 5;
const GNU_PROPERTY_X86_ISA_1_NEEDED = 0xc0008002;
/** sizeof (struct exec) and sizeof (Elf64_Ehdr): smaller files are not looked at. */
const MIN_SIZE = 64;
/** a.out's ZMAGIC and QMAGIC (N_MAGIC, the low 16 bits of the first word). */
const AOUT_MAGICS = new Set([0o413, 0o314]);
/** The most bytes of a string read before calling it unterminated. */
const MAX_STRING = 64 * 1024;

/** Interpreters (PT_INTERP) and DT_NEEDED names that make ldconfig call a library libc6 early. */
const INTERPRETERS: Record<LdconfigMachine, ReadonlySet<string>> = {
  "x86-64": new Set([
    "/lib/ld-linux-x86-64.so.2",
    "/lib/ld-linux.so.2",
    "/libx32/ld-linux-x32.so.2",
    "/lib64/ld-linux-x86-64.so.2",
  ]),
  aarch64: new Set([
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-aarch64_be.so.1",
    "/lib/ld-linux-aarch64_ilp32.so.1",
    "/lib/ld-linux-aarch64_be_ilp32.so.1",
    "/lib/ld-linux.so.3",
    "/lib/ld-linux-armhf.so.3",
  ]),
};
const KNOWN_LIBS = new Set(["libc.so.6", "libm.so.6"]);
const FLAG_ELF = 1;
const FLAG_ELF_LIBC6 = 3;

class PastEnd extends Error {}

/** How much of a file one read fetches: a library's headers and strings are mostly in its first block. */
const BLOCK = 16 * 1024;

/**
 * Positional reads of one file of known size, in blocks kept for the file's reading (ldconfig
 * looks at a few hundred bytes scattered over a library; one read per header was most of the
 * time), synchronous: a threadpool round trip per read cost more than the read, several seconds
 * for a few hundred libraries on a loaded machine. A read past the file's end is `PastEnd`.
 */
class FileReader {
  private readonly fd: number;
  readonly size: number;
  private readonly blocks = new Map<number, Buffer>();

  constructor(fd: number, size: number) {
    this.fd = fd;
    this.size = size;
  }

  private block(index: number): Buffer {
    let b = this.blocks.get(index);
    if (!b) {
      const length = Math.min(BLOCK, this.size - index * BLOCK);
      b = Buffer.allocUnsafe(length);
      const bytesRead = readSync(this.fd, b, 0, length, index * BLOCK);
      if (bytesRead !== length) throw new PastEnd();
      this.blocks.set(index, b);
    }
    return b;
  }

  bytes(offset: bigint | number, length: number): Buffer {
    const at = BigInt(offset);
    if (at < 0n || at + BigInt(length) > BigInt(this.size)) throw new PastEnd();
    const start = Number(at);
    const first = Math.floor(start / BLOCK);
    const last = Math.floor((start + length - 1) / BLOCK);
    if (length === 0) return Buffer.alloc(0);
    if (first === last) {
      const b = this.block(first);
      return b.subarray(start - first * BLOCK, start - first * BLOCK + length);
    }
    const parts: Buffer[] = [];
    for (let i = first; i <= last; i++) parts.push(this.block(i));
    const joined = Buffer.concat(parts);
    return joined.subarray(start - first * BLOCK, start - first * BLOCK + length);
  }

  /** The NUL-terminated string at `offset` (as bytes, without the NUL). */
  cString(offset: bigint): Buffer {
    const chunks: Buffer[] = [];
    let at = offset;
    for (let total = 0; total < MAX_STRING; ) {
      const want = Math.min(256, Number(BigInt(this.size) - at));
      if (want <= 0) throw new PastEnd();
      const chunk = this.bytes(at, want);
      const nul = chunk.indexOf(0);
      if (nul >= 0) {
        chunks.push(chunk.subarray(0, nul));
        return Buffer.concat(chunks);
      }
      chunks.push(chunk);
      at += BigInt(want);
      total += want;
    }
    throw new PastEnd();
  }

  /** check_ptr: a pointer within [0, size] (ldconfig allows the end itself). */
  inRange(offset: bigint): boolean {
    return offset >= 0n && offset <= BigInt(this.size);
  }
}

/** Read the open file `fd` (a regular file of `size` bytes) as ldconfig does for `machine`. */
export function readElfLibrary(fd: number, size: number, machine: LdconfigMachine): ElfLibraryReading {
  const file = new FileReader(fd, size);
  try {
    if (size < MIN_SIZE) return { kind: "skip", why: "too small" };
    const head = file.bytes(0, 64);
    if (AOUT_MAGICS.has(head.readUInt16LE(0))) return { kind: "unsupported", why: "an a.out library" };
    if (head.readUInt32BE(0) !== 0x7f454c46) return { kind: "skip", why: "not ELF" };
    if (head.readUInt16LE(16) !== ET_DYN) return { kind: "skip", why: "not a shared object" };
    const elfClass = head[4];
    const eMachine = head.readUInt16LE(18);
    if (machine === "x86-64") {
      if (eMachine === EM_X86_64 && elfClass === 1) return { kind: "unsupported", why: "an x32 library" };
      if (eMachine === EM_386 && elfClass === 1) return { kind: "unsupported", why: "a 32-bit library" };
      if (eMachine !== EM_X86_64) return { kind: "skip", why: `machine ${eMachine}` };
    } else if (elfClass === 1) return { kind: "unsupported", why: "a 32-bit library" };
    if (elfClass !== 2) return { kind: "skip", why: "not ELFCLASS64" };
    return readElf64(file, head, machine);
  } catch (e) {
    if (e instanceof PastEnd)
      return { kind: "unsupported", why: "a header that reaches past the end of the file" };
    throw e;
  }
}

function readElf64(file: FileReader, head: Buffer, machine: LdconfigMachine): ElfLibraryReading {
  const phoff = head.readBigUInt64LE(32);
  const phnum = head.readUInt16LE(56);
  if (!file.inRange(phoff)) return { kind: "skip", why: "truncated" };
  let flag = FLAG_ELF;
  let isaLevel = 0;
  let dynamicAddr = 0n;
  let dynamicSize = 0n;
  const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + BigInt(i * 56);
    if (!file.inRange(at)) return { kind: "skip", why: "truncated" };
    const ph = file.bytes(at, 56);
    const type = ph.readUInt32LE(0);
    const offset = ph.readBigUInt64LE(8);
    const vaddr = ph.readBigUInt64LE(16);
    const filesz = ph.readBigUInt64LE(32);
    const align = ph.readBigUInt64LE(48);
    if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
    else if (type === PT_DYNAMIC) {
      // ldconfig keeps the offset in an unsigned int.
      if (offset > 0xffffffffn) return { kind: "unsupported", why: "a dynamic section beyond 4 GiB" };
      dynamicAddr = offset;
      dynamicSize = filesz;
    } else if (type === PT_INTERP) {
      if (!file.inRange(offset)) return { kind: "skip", why: "truncated" };
      const interp = file.cString(offset).toString("latin1");
      if (INTERPRETERS[machine].has(interp)) flag = FLAG_ELF_LIBC6;
    } else if (type === PT_GNU_PROPERTY && machine === "x86-64" && align === 8n) {
      isaLevel = x86IsaLevel(file, offset, filesz, align) ?? isaLevel;
    }
  }
  if (dynamicSize === 0n) return { kind: "skip", why: "no dynamic section" };
  if (!file.inRange(dynamicAddr)) return { kind: "skip", why: "truncated" };

  // The first DT_STRTAB, placed through the PT_LOAD segment holding its address.
  let strings: bigint | undefined;
  for (let at = dynamicAddr; ; at += 16n) {
    const dyn = file.bytes(at, 16);
    const tag = dyn.readBigInt64LE(0);
    if (tag === DT_NULL) break;
    if (tag !== DT_STRTAB) continue;
    const value = dyn.readBigUInt64LE(8);
    const load = loads.find((l) => value >= l.vaddr && value - l.vaddr < l.filesz);
    const loadoff = load ? BigInt.asUintN(64, load.vaddr - load.offset) : 0n;
    strings = BigInt.asUintN(64, value - loadoff);
    if (!file.inRange(strings)) return { kind: "skip", why: "truncated" };
    break;
  }
  if (strings === undefined) return { kind: "skip", why: "no string table" };

  let soname: string | undefined;
  for (let at = dynamicAddr; ; at += 16n) {
    const dyn = file.bytes(at, 16);
    const tag = dyn.readBigInt64LE(0);
    if (tag === DT_NULL) break;
    if (tag !== DT_NEEDED && tag !== DT_SONAME) continue;
    const name = BigInt.asUintN(64, strings + dyn.readBigUInt64LE(8));
    if (!file.inRange(name)) return { kind: "skip", why: "truncated" };
    const text = file.cString(name);
    if (tag === DT_NEEDED) {
      if (flag === FLAG_ELF && KNOWN_LIBS.has(text.toString("latin1"))) flag = FLAG_ELF_LIBC6;
    } else {
      const decoded = decodeUtf8(text);
      if (decoded === undefined) return { kind: "unsupported", why: "a soname that is not UTF-8" };
      soname = decoded;
    }
    if (soname !== undefined && flag !== FLAG_ELF) break;
  }
  return { kind: "library", soname, isaLevel };
}

/**
 * The x86 ISA level a PT_GNU_PROPERTY segment asks for (the highest bit of
 * GNU_PROPERTY_X86_ISA_1_NEEDED), as sysdeps/unix/sysv/linux/x86/elf-read-prop.h reads it;
 * undefined when the segment does not say.
 */
function x86IsaLevel(file: FileReader, offset: bigint, size: bigint, align: bigint): number | undefined {
  const alignUp = (n: bigint) => (n + align - 1n) & ~(align - 1n);
  let note = offset;
  while (note + 12n - offset < size) {
    const nhdr = file.bytes(note, 12);
    const namesz = nhdr.readUInt32LE(0);
    const descsz = nhdr.readUInt32LE(4);
    const type = nhdr.readUInt32LE(8);
    if (namesz === 4 && type === NT_GNU_PROPERTY_TYPE_0 && file.bytes(note + 12n, 4).equals(GNU)) {
      if (descsz < 8 || descsz % 8 !== 0) return undefined;
      let ptr = note + 16n;
      const end = ptr + BigInt(descsz);
      let lastType = 0;
      do {
        const prop = file.bytes(ptr, 8);
        const ptype = prop.readUInt32LE(0);
        const datasz = prop.readUInt32LE(4);
        if (ptype < lastType) return undefined;
        ptr += 8n;
        if (ptr + BigInt(datasz) > end) return undefined;
        lastType = ptype;
        if (ptype > GNU_PROPERTY_X86_ISA_1_NEEDED) return undefined;
        if (ptype === GNU_PROPERTY_X86_ISA_1_NEEDED) {
          if (datasz !== 4) return undefined;
          const needed = file.bytes(ptr, 4).readUInt32LE(0);
          return needed === 0 ? undefined : 31 - Math.clz32(needed);
        }
        ptr += (BigInt(datasz) + 7n) & ~7n;
      } while (end - ptr >= 8n);
      return undefined;
    }
    note += 12n + alignUp(BigInt(namesz)) + alignUp(BigInt(descsz));
  }
  return undefined;
}

const GNU = Buffer.from("GNU\0", "latin1");

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** `bytes` as text when they are valid UTF-8 (and so survive a round trip through a JS string). */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}
