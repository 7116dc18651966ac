import { SutureError } from "../../../errors/errors.ts";

/**
 * How the dpkg engines run the image's own apt and dpkg (the sandbox engine's apt-get, the native
 * engine's `dpkg --configure`): their environment, and their failures in one line.
 */

/** The environment of the image's apt and dpkg, read when they run (the proxy may be set after load). */
export function aptEnv(): string[] {
  return [
    "DEBIAN_FRONTEND=noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN=true",
    "LC_ALL=C",
    // apt in the container uses the host's proxy, as suture's own downloads do.
    ...["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].flatMap((k) =>
      process.env[k] ? [`${k}=${process.env[k]}`] : [],
    ),
  ];
}

/**
 * One line from apt's output: its `E:` lines (else the last lines), with verification failures
 * turned into UNTRUSTED errors that say what they mean.
 */
export function aptFailure(what: string, exitCode: number, output: string): SutureError {
  const lines = output.trim().split("\n");
  const errors = lines.filter((l) => l.startsWith("E: "));
  const summary = (errors.length ? errors : lines.slice(-3)).join(" | ").slice(0, 500);
  if (
    /Hash Sum mismatch|File has unexpected size|NO_PUBKEY|is not signed|invalid signature|EXPKEYSIG|is no longer valid|not valid yet/i.test(
      output,
    )
  ) {
    return new SutureError(
      "UNTRUSTED",
      `${what}: apt refused what the repository served (it does not match the signed metadata): ${summary}; the mirror or a proxy is serving altered or stale files, use another mirror`,
    );
  }
  return new SutureError("PATCH_FAILED", `${what} failed in the image (exit ${exitCode}): ${summary}`);
}
