import { SutureError } from "../../errors/errors.ts";

/** dpkg's name for an OCI platform's architecture. */
export function dpkgArchitecture(architecture: string, variant?: string): string {
  switch (architecture) {
    case "amd64":
    case "arm64":
    case "s390x":
    case "riscv64":
      return architecture;
    case "386":
      return "i386";
    case "ppc64le":
      return "ppc64el";
    case "arm":
      return variant === "v5" || variant === "v6" ? "armel" : "armhf";
    default:
      throw new SutureError("UNSUPPORTED_PLATFORM", `no Debian architecture matches ${architecture}`);
  }
}
