import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import type { Platform } from "./manifest.ts";

/** Parse `os/arch[/variant]` (e.g. `linux/arm64/v8`), normalising aliases the way containerd does. */
export function parsePlatform(text: string): Platform {
  const parts = text.trim().split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === "")) {
    throw new SutureError(
      "INVALID_REFERENCE",
      `invalid platform ${quoteUntrusted(text)}: use os/arch[/variant], e.g. linux/amd64`,
    );
  }
  return normalizePlatform({ os: parts[0]!, architecture: parts[1]!, variant: parts[2] });
}

export function normalizePlatform(p: Platform): Platform {
  let { architecture, variant } = p;
  const os = p.os.toLowerCase();
  architecture = architecture.toLowerCase();
  if (architecture === "x86_64" || architecture === "x86-64") architecture = "amd64";
  if (architecture === "aarch64") architecture = "arm64";
  if (architecture === "arm64" && (variant === "v8" || variant === "8")) variant = undefined;
  if (architecture === "armhf") {
    architecture = "arm";
    variant = "v7";
  }
  if (architecture === "i386") architecture = "386";
  const out: Platform = { ...p, os, architecture };
  if (variant) out.variant = variant;
  else delete out.variant;
  return out;
}

export function formatPlatform(p: Platform): string {
  const n = normalizePlatform(p);
  return n.variant ? `${n.os}/${n.architecture}/${n.variant}` : `${n.os}/${n.architecture}`;
}

/** True when `candidate` satisfies `wanted`; a wanted platform without variant matches any variant. */
export function platformMatches(wanted: Platform, candidate: Platform): boolean {
  const w = normalizePlatform(wanted);
  const c = normalizePlatform(candidate);
  if (w.os !== c.os || w.architecture !== c.architecture) return false;
  return (
    !w.variant || w.variant === c.variant || (w.architecture === "arm" && !c.variant && w.variant === "v7")
  );
}

/** The platform of the machine we run on, as an image platform. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = {
    x64: "amd64",
    arm64: "arm64",
    arm: "arm",
    ia32: "386",
    ppc64: "ppc64le",
    s390x: "s390x",
    riscv64: "riscv64",
  };
  return { os: "linux", architecture: arch[process.arch] ?? process.arch };
}
