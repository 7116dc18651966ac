import { type AttachDestination, type AttachResult, attachDocuments } from "../attest/attach.ts";
import type { SigningKey } from "../attest/dsse.ts";
import {
  manifestSubject,
  PATCH_PREDICATE_TYPE,
  type PatchedPackage,
  type PatchedPlatform,
  type PatchPredicate,
  statement,
} from "../attest/statement.ts";
import { isSutureError, SutureError } from "../errors/errors.ts";
import { type Image, imagePlatform } from "../image/image.ts";
import type { Descriptor, RawManifest } from "../oci/manifest.ts";
import { formatPlatform } from "../oci/platform.ts";
import type { ProgressSink } from "../progress/events.ts";
import type { TransportReference } from "../ref/transport.ts";
import { sbomTimestamp } from "../sbom/sbom.ts";
import type { TransportOptions } from "../transports/index.ts";
import type { OpenVexDocument } from "../vex/openvex.ts";
import type { PlatformResult } from "./platform.ts";
import type { PatchedSbom } from "./sbom.ts";

/**
 * `--attach` needs a destination that holds manifests beside the image (a registry, an OCI
 * layout); checked before any work, as every output is.
 */
export function attachDestination(
  sinkRef: TransportReference,
  transport: TransportOptions,
): AttachDestination {
  if (sinkRef.transport === "registry")
    return { transport: "registry", ref: sinkRef.ref, options: transport };
  if (sinkRef.transport === "oci") return { transport: "oci", dir: sinkRef.dir, options: transport };
  throw new SutureError(
    "USAGE",
    `--attach needs a destination that holds referrers (a registry or an OCI layout), not ${sinkRef.transport === "docker-daemon" ? "the Docker daemon" : "a docker-archive"}: add --push or --oci-dir DIR, or drop --attach and keep -o/--sbom files`,
  );
}

/** One patched platform: the result, the image written, and the source manifest it replaced. */
export interface PatchedForAttach {
  result: PlatformResult;
  image: Image;
  sourceDigest: string;
}

/**
 * Attach the VEX, the SBOM and the patch's provenance to what was written (see
 * attest/attach.ts). The provenance's subjects are the written root and every patched platform
 * manifest; cosign verifies the root's digest against them.
 */
export async function attachPatch(input: {
  destination: AttachDestination;
  /** The root manifest as committed (an OCI layout may store a converted form). */
  written: RawManifest;
  subjectName: string;
  source: { name: string; digest: string };
  target: string;
  patched: readonly PatchedForAttach[];
  droppedAttestations: readonly string[];
  vex?: OpenVexDocument;
  sbom: PatchedSbom;
  toolVersion: string;
  key?: SigningKey;
  progress: ProgressSink;
}): Promise<AttachResult> {
  const subject: Descriptor = {
    mediaType: input.written.mediaType,
    digest: input.written.digest,
    size: input.written.bytes.length,
  };
  const predicate: PatchPredicate = {
    tool: { name: "suture", version: input.toolVersion },
    source: input.source,
    result: { name: input.target, digest: input.written.digest },
    droppedAttestations: [...input.droppedAttestations],
    platforms: input.patched.map((p) => patchedPlatform(p, input.sbom)),
  };
  const subjects = [
    manifestSubject(input.subjectName, input.written.digest),
    ...input.patched
      .filter((p) => p.image.manifest.digest !== input.written.digest)
      .map((p) => manifestSubject(input.subjectName, p.image.manifest.digest)),
  ];
  try {
    return await attachDocuments(
      input.destination,
      subject,
      {
        vex: input.vex,
        sbom: { format: input.sbom.format, document: input.sbom.document },
        statement: statement(subjects, PATCH_PREDICATE_TYPE, predicate),
      },
      { key: input.key, created: sbomTimestamp() },
    );
  } catch (e) {
    // The image is already committed: say so, or a user would patch (and push) it again.
    if (!isSutureError(e) || e.code === "CANCELLED") throw e;
    throw new SutureError(
      e.code,
      `${input.target} was written (${input.written.digest}) but attaching its documents failed: ${e.message}`,
      { cause: e, retryable: e.retryable },
    );
  }
}

function patchedPlatform(p: PatchedForAttach, sbom: PatchedSbom): PatchedPlatform {
  const layer = p.image.parsed.layers.at(-1);
  if (!layer) throw new SutureError("INTERNAL", `patched image ${p.image.manifest.digest} has no layers`);
  // A single image written to an OCI layout may be stored converted (another digest): it is the only one.
  const inventory =
    sbom.images.find((i) => i.digest === p.image.manifest.digest) ??
    (sbom.images.length === 1 ? sbom.images[0] : undefined);
  const packages: PatchedPackage[] = p.result.changed.map((c) => {
    const pkg = inventory?.packages.find((x) => x.name === c.name && x.version === c.to);
    return {
      name: c.name,
      ...(c.from !== undefined ? { from: c.from } : {}),
      to: c.to,
      ...(pkg?.source ? { source: { name: pkg.source.name, version: pkg.source.version } } : {}),
      ...(pkg ? { purl: pkg.purl } : {}),
      ...(pkg?.previous ? { previousPurl: pkg.previous.purl } : {}),
    };
  });
  const fixed = new Set(p.result.changed.map((c) => c.name));
  for (const f of p.result.failed) fixed.delete(f.name);
  const vulnerabilities = [
    ...new Set(
      (p.result.plan?.updates ?? []).filter((u) => fixed.has(u.name)).flatMap((u) => u.vulnerabilities),
    ),
  ].sort();
  return {
    platform: formatPlatform(imagePlatform(p.image)),
    sourceDigest: p.sourceDigest,
    digest: p.image.manifest.digest,
    patchLayer: {
      mediaType: layer.mediaType,
      digest: layer.digest,
      size: layer.size,
      ...(p.result.layer?.diffID ? { diffID: p.result.layer.diffID } : {}),
    },
    ...(p.result.engine ? { engine: p.result.engine } : {}),
    packages,
    vulnerabilities,
  };
}
