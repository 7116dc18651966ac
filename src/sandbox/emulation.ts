import { readFile } from "node:fs/promises";
import { SutureError } from "../errors/errors.ts";
import type { Platform } from "../oci/manifest.ts";
import { formatPlatform, hostPlatform } from "../oci/platform.ts";

/** QEMU's name for an OCI architecture, as binfmt_misc handlers are named. */
const QEMU_ARCH: Record<string, string> = {
  amd64: "x86_64",
  arm64: "aarch64",
  arm: "arm",
  "386": "i386",
  ppc64le: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};

/**
 * A foreign-architecture image's programs (apt, maintainer scripts) run under QEMU user emulation.
 * The handler needs the F (fix-binary) flag: the interpreter is opened at registration, so it works
 * inside the container's root, where no qemu binary exists.
 */
export async function assertCanRun(platform: Platform): Promise<void> {
  if (platform.architecture === hostPlatform().architecture) return;
  const qemu = QEMU_ARCH[platform.architecture] ?? platform.architecture;
  const how = `install qemu-user-static and binfmt-support, then run update-binfmts --enable qemu-${qemu}`;
  const handler = await readFile(`/proc/sys/fs/binfmt_misc/qemu-${qemu}`, "utf8").catch(() => undefined);
  if (!handler || !/^enabled$/m.test(handler)) {
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `patching ${formatPlatform(platform)} needs QEMU user emulation, which is not enabled here: ${how}`,
    );
  }
  if (!/^flags:.*F/m.test(handler)) {
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `the qemu-${qemu} binfmt handler lacks the F (fix-binary) flag, so it cannot run inside a container: re-register it with qemu-user-static's binfmt-support files (${how})`,
    );
  }
}
