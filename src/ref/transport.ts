import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import { formatReference, type ImageReference, parseReference } from "./reference.ts";

/**
 * Where an image lives, skopeo-style: `docker://REF` (a registry; also the default for a bare
 * reference), `oci:DIR[:TAG]`, `docker-archive:FILE[:REF]`, `docker-daemon:REF`, and `podman:REF`
 * (the same Engine API, reached at Podman's socket: see resolveEngineEndpoint).
 */
export type TransportReference =
  | { transport: "registry"; ref: ImageReference }
  | { transport: "oci"; dir: string; tag?: string }
  | { transport: "docker-archive"; file: string; ref?: ImageReference }
  | { transport: "docker-daemon"; ref: ImageReference; engine?: DaemonEngine };

/** Which local engine a `docker-daemon:` reference means; `podman:` is Podman's Docker-compatible API. */
export type DaemonEngine = "docker" | "podman";

export function parseTransportReference(text: string): TransportReference {
  if (text.startsWith("docker://")) return { transport: "registry", ref: parseReference(text.slice(9)) };
  if (text.startsWith("oci:")) {
    const { path, suffix } = splitPathSuffix(text.slice(4));
    if (!path)
      throw new SutureError(
        "INVALID_REFERENCE",
        `invalid ${quoteUntrusted(text)}: oci: needs a directory, e.g. oci:./out:v1`,
      );
    return { transport: "oci", dir: path, tag: suffix };
  }
  if (text.startsWith("docker-archive:")) {
    const { path, suffix } = splitPathSuffix(text.slice(15));
    if (!path)
      throw new SutureError(
        "INVALID_REFERENCE",
        `invalid ${quoteUntrusted(text)}: docker-archive: needs a file, e.g. docker-archive:img.tar`,
      );
    return { transport: "docker-archive", file: path, ref: suffix ? parseReference(suffix) : undefined };
  }
  if (text.startsWith("docker-daemon:"))
    return { transport: "docker-daemon", ref: parseReference(text.slice(14)) };
  if (text.startsWith("podman:"))
    return { transport: "docker-daemon", ref: parseReference(text.slice(7)), engine: "podman" };
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//.exec(text);
  if (scheme) {
    throw new SutureError(
      "INVALID_REFERENCE",
      `unknown transport "${scheme[1]}://" in ${quoteUntrusted(text)}: use docker://, oci:, docker-archive:, docker-daemon: or podman:`,
    );
  }
  return { transport: "registry", ref: parseReference(text) };
}

/**
 * Split `path[:suffix]`. A colon followed by something that looks like a tag or reference ends the
 * path; paths with colons can be written with a trailing `:` to end them explicitly.
 */
function splitPathSuffix(text: string): { path: string; suffix?: string } {
  const idx = text.indexOf(":");
  if (idx < 0) return { path: text };
  const suffix = text.slice(idx + 1);
  return { path: text.slice(0, idx), suffix: suffix || undefined };
}

export function formatTransportReference(t: TransportReference): string {
  switch (t.transport) {
    case "registry":
      return `docker://${formatReference(t.ref)}`;
    case "oci":
      return `oci:${t.dir}${t.tag ? `:${t.tag}` : ""}`;
    case "docker-archive":
      return `docker-archive:${t.file}${t.ref ? `:${formatReference(t.ref)}` : ""}`;
    case "docker-daemon":
      return `${t.engine === "podman" ? "podman" : "docker-daemon"}:${formatReference(t.ref)}`;
  }
}
