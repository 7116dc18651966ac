import { quoteUntrusted, SutureError } from "../errors/errors.ts";

/**
 * A registry image reference, normalised the way Docker does it:
 * `nginx` → registry `docker.io`, repository `library/nginx`, tag `latest`.
 */
export interface ImageReference {
  /** Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`. */
  readonly registry: string;
  /** Repository path, e.g. `library/nginx`. */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: string;
}

export const DOCKER_HUB = "docker.io";
/** The host Docker Hub's API actually lives on. */
export const DOCKER_HUB_API = "registry-1.docker.io";

const repoComponent = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[\w][\w.-]{0,127}$/;
const digestPattern = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const sha256Pattern = /^sha256:[a-f0-9]{64}$/;

function invalid(text: string, why: string): SutureError {
  return new SutureError("INVALID_REFERENCE", `invalid image reference ${quoteUntrusted(text)}: ${why}`);
}

/** Parse a Docker-style reference: `[registry/]repo[:tag][@digest]`. A bare name gets `:latest`. */
export function parseReference(text: string, options: { defaultTag?: boolean } = {}): ImageReference {
  const input = text.trim();
  if (!input) throw invalid(text, "it is empty");
  if (/\s/.test(input)) throw invalid(text, "it contains whitespace");
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestPattern.test(digest))
      throw invalid(text, `${quoteUntrusted(digest)} is not a digest (want sha256:<64 hex>)`);
    if (digest.startsWith("sha256:") && !sha256Pattern.test(digest)) {
      throw invalid(text, `${quoteUntrusted(digest)} is not a sha256 digest (want 64 lowercase hex digits)`);
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagPattern.test(tag)) throw invalid(text, `${quoteUntrusted(tag)} is not a valid tag`);
  }
  const parts = rest.split("/");
  let registry = DOCKER_HUB;
  const first = parts[0]!;
  if (parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost")) {
    registry = first;
    parts.shift();
  }
  if (registry === "index.docker.io" || registry === DOCKER_HUB_API) registry = DOCKER_HUB;
  if (parts.length === 0 || parts.some((p) => p === "")) throw invalid(text, "the repository name is empty");
  for (const p of parts) {
    if (!repoComponent.test(p)) {
      throw invalid(
        text,
        `${quoteUntrusted(p)} is not a valid repository component (lowercase letters, digits, . _ -)`,
      );
    }
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift("library");
  const repository = parts.join("/");
  if (repository.length > 255) throw invalid(text, "the repository name is longer than 255 characters");
  if (!tag && !digest && options.defaultTag !== false) tag = "latest";
  return { registry, repository, tag, digest };
}

/** Full form: `docker.io/library/nginx:latest@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag) s += `:${ref.tag}`;
  if (ref.digest) s += `@${ref.digest}`;
  return s;
}

/** Short familiar form: `nginx:latest` for Docker Hub library images. */
export function familiarName(ref: ImageReference): string {
  let repo = `${ref.registry}/${ref.repository}`;
  if (ref.registry === DOCKER_HUB) repo = ref.repository.replace(/^library\//, "");
  return repo;
}

/** The tag or digest to address a manifest by (digest wins: it is immutable). */
export function manifestIdentifier(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!tagPattern.test(tag)) throw invalid(tag, `${quoteUntrusted(tag)} is not a valid tag`);
  return { registry: ref.registry, repository: ref.repository, tag };
}

/** True for registries we may talk plain HTTP to without being asked: loopback only. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
