import { SutureError } from "../errors/errors.ts";
import { type ImageReference, parseReference } from "../ref/reference.ts";
import type { TransportReference } from "../ref/transport.ts";

export interface TargetOptions {
  /** `-t`: a tag (`1.2-fixed`) or a full reference (`registry/repo:tag`). */
  tag?: string;
  /** `--tag-suffix`, default `patched`. */
  tagSuffix?: string;
  push?: boolean;
  ociDir?: string;
  archive?: string;
}

/** The reference a source stands for, when it has one (an OCI layout tag has no repository). */
export function sourceImageReference(src: TransportReference): ImageReference | undefined {
  switch (src.transport) {
    case "registry":
    case "docker-daemon":
      return src.ref;
    case "docker-archive":
      return src.ref;
    case "oci":
      return undefined;
  }
}

/**
 * Where the patched image goes and under which name, following copa's rules: `-t TAG` keeps the
 * source repository; `-t repo:tag` names both; no `-t` gives `<source tag>-<suffix>`. A source
 * without a tag (digest only) needs `-t`. The result never equals the source tag.
 */
export function resolveTarget(
  src: TransportReference,
  options: TargetOptions,
): { ref?: ImageReference; tag: string; sink: TransportReference | "daemon" } {
  const srcRef = sourceImageReference(src);
  const srcTag = src.transport === "oci" ? src.tag : srcRef?.tag;
  const suffix = options.tagSuffix ?? "patched";
  let ref: ImageReference | undefined;
  let tag: string;
  if (options.tag && /[:/@]/.test(options.tag)) {
    const full = parseReference(options.tag, { defaultTag: false });
    if (!full.tag || full.digest) {
      throw new SutureError("USAGE", `-t ${options.tag} must name a tag (repo:tag), not a digest`);
    }
    ref = { registry: full.registry, repository: full.repository, tag: full.tag };
    tag = full.tag;
  } else if (options.tag) {
    tag = options.tag;
    ref = srcRef ? { registry: srcRef.registry, repository: srcRef.repository, tag } : undefined;
  } else {
    if (!srcTag || (srcRef?.digest && src.transport === "registry" && !srcRef.tag)) {
      throw new SutureError("USAGE", "the source has no tag to derive the patched tag from: pass -t TAG");
    }
    tag = `${srcTag}-${suffix}`;
    ref = srcRef ? { registry: srcRef.registry, repository: srcRef.repository, tag } : undefined;
  }
  if (!/^[\w][\w.-]{0,127}$/.test(tag)) throw new SutureError("USAGE", `"${tag}" is not a valid tag`);
  const outputs = [options.push, options.ociDir, options.archive].filter(Boolean).length;
  if (outputs > 1) throw new SutureError("USAGE", "choose one output: --push, --oci-dir or --archive");
  if (options.ociDir) return { ref, tag, sink: { transport: "oci", dir: options.ociDir, tag } };
  if (options.archive) return { ref, tag, sink: { transport: "docker-archive", file: options.archive, ref } };
  if (!ref) {
    throw new SutureError(
      "USAGE",
      "an OCI-layout source has no repository name: pass -t registry/repo:tag, or use --oci-dir/--archive",
    );
  }
  if (options.push) return { ref, tag, sink: { transport: "registry", ref } };
  return { ref, tag, sink: "daemon" };
}
