import { quoteUntrusted, SutureError } from "../errors/errors.ts";

/**
 * File capabilities as text (`cap_net_raw,cap_net_admin=ep`, libcap's cap_from_text grammar, the
 * form rpm's FILECAPS tag records) turned into the `security.capability` xattr the kernel reads
 * (`struct vfs_cap_data`, capabilities(7)): revision 2, 20 bytes little-endian — magic with the
 * effective flag, then permitted and inheritable of the low and the high 32 capabilities. This is
 * what libcap's cap_set_file writes outside a user namespace, so the bytes match what rpm leaves.
 */

/** Capability names by number (linux/capability.h), without the `cap_` prefix. */
const CAPABILITY_NAMES = [
  "chown",
  "dac_override",
  "dac_read_search",
  "fowner",
  "fsetid",
  "kill",
  "setgid",
  "setuid",
  "setpcap",
  "linux_immutable",
  "net_bind_service",
  "net_broadcast",
  "net_admin",
  "net_raw",
  "ipc_lock",
  "ipc_owner",
  "sys_module",
  "sys_rawio",
  "sys_chroot",
  "sys_ptrace",
  "sys_pacct",
  "sys_admin",
  "sys_boot",
  "sys_nice",
  "sys_resource",
  "sys_time",
  "sys_tty_config",
  "mknod",
  "lease",
  "audit_write",
  "audit_control",
  "setfcap",
  "mac_override",
  "mac_admin",
  "syslog",
  "wake_alarm",
  "block_suspend",
  "audit_read",
  "perfmon",
  "bpf",
  "checkpoint_restore",
] as const;

const VFS_CAP_REVISION_2 = 0x02000000;
const VFS_CAP_FLAGS_EFFECTIVE = 0x000001;

function bad(text: string, why: string): SutureError {
  return new SutureError(
    "INVALID_ARCHIVE",
    `file capabilities ${quoteUntrusted(text)} cannot be read: ${why}; the package is malformed, so nothing was written`,
  );
}

function capabilityNumbers(names: string, text: string): number[] {
  // An empty list before the operator means every capability (`=ep`), as does `all`.
  if (names === "" || names.toLowerCase() === "all") return CAPABILITY_NAMES.map((_, i) => i);
  return names.split(",").map((raw) => {
    const name = raw.toLowerCase();
    if (/^\d{1,2}$/.test(name) && Number(name) < 64) return Number(name);
    const i = (CAPABILITY_NAMES as readonly string[]).indexOf(name.replace(/^cap_/, ""));
    if (i < 0) throw bad(text, `${quoteUntrusted(raw)} is no capability`);
    return i;
  });
}

/** The `security.capability` value for capabilities `text`; undefined when the text grants none. */
export function capabilityXattr(text: string): Buffer | undefined {
  const sets = { e: 0n, i: 0n, p: 0n };
  for (const clause of text.trim().split(/\s+/)) {
    if (clause === "") continue;
    const m = /^([A-Za-z0-9_,]*)((?:[=+-][eipEIP]*)+)$/.exec(clause);
    if (!m) throw bad(text, `clause ${quoteUntrusted(clause)} is not NAMES[=+-]FLAGS`);
    let mask = 0n;
    for (const n of capabilityNumbers(m[1]!, text)) mask |= 1n << BigInt(n);
    for (const action of m[2]!.match(/[=+-][eipEIP]*/g)!) {
      const op = action[0]!;
      const flags = action.slice(1).toLowerCase();
      if (op === "=") {
        sets.e &= ~mask;
        sets.i &= ~mask;
        sets.p &= ~mask;
      } else if (flags === "") throw bad(text, `${quoteUntrusted(clause)} adds or drops no flag`);
      for (const f of flags as Iterable<"e" | "i" | "p">) {
        if (op === "-") sets[f] &= ~mask;
        else sets[f] |= mask;
      }
    }
  }
  if (sets.p === 0n && sets.i === 0n) {
    if (sets.e !== 0n) throw bad(text, "capabilities are effective without being permitted or inheritable");
    return undefined;
  }
  const out = Buffer.alloc(20);
  out.writeUInt32LE(VFS_CAP_REVISION_2 | (sets.e === 0n ? 0 : VFS_CAP_FLAGS_EFFECTIVE), 0);
  const low = (v: bigint) => Number(v & 0xffffffffn);
  const high = (v: bigint) => Number((v >> 32n) & 0xffffffffn);
  out.writeUInt32LE(low(sets.p), 4);
  out.writeUInt32LE(low(sets.i), 8);
  out.writeUInt32LE(high(sets.p), 12);
  out.writeUInt32LE(high(sets.i), 16);
  return out;
}
