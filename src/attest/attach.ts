import { Readable } from "node:stream";
import { isSutureError } from "../errors/errors.ts";
import {
  type Descriptor,
  ImageManifestSchema,
  IndexSchema,
  parseJson,
  type RawManifest,
} from "../oci/manifest.ts";
import { isIndexMediaType } from "../oci/media-types.ts";
import type { ImageReference } from "../ref/reference.ts";
import type { TransportOptions } from "../transports/index.ts";
import { openLayoutSink, openLayoutSource } from "../transports/layout/layout.ts";
import { openRegistryReferrers, type RegistryOptions } from "../transports/registry/registry.ts";
import {
  type Artifact,
  ArtifactType,
  cosignAttestationImage,
  cosignAttestationTag,
  DSSE_ENVELOPE_MEDIA_TYPE,
  PREDICATE_TYPE_ANNOTATION,
  referrerArtifact,
  referrersIndex,
  referrersTag,
} from "./artifacts.ts";
import { IN_TOTO_PAYLOAD_TYPE, type SigningKey, signEnvelope } from "./dsse.ts";
import {
  CYCLONEDX_PREDICATE_TYPE,
  type InTotoStatement,
  OPENVEX_PREDICATE_TYPE,
  SPDX_PREDICATE_TYPE,
  statement,
} from "./statement.ts";

/** Where the patched image was written: only sinks that hold more than one manifest can hold referrers. */
export type AttachDestination =
  | { transport: "registry"; ref: ImageReference; options: RegistryOptions }
  | { transport: "oci"; dir: string; options: TransportOptions };

/** The documents of one patch, attached to the image it wrote. */
export interface AttachDocuments {
  /** The OpenVEX document (absent when there was no report, so no VEX). */
  vex?: unknown;
  sbom: { format: "cyclonedx" | "spdx"; document: unknown };
  /** The patch's provenance (predicate https://suture.dev/patch/v1); its subjects name the written digests. */
  statement: InTotoStatement;
}

export interface AttachedArtifact {
  artifactType: string;
  digest: string;
  /** The statement's predicate type, for signed envelopes and the provenance. */
  predicateType?: string;
  signed: boolean;
}

export interface AttachResult {
  subject: string;
  artifacts: AttachedArtifact[];
  /** The referrers tag (`sha256-<hex>`) written, when the destination has no referrers API. */
  referrersTag?: string;
  /** cosign's attestation tag (`sha256-<hex>.att`), with `--sign-key`. */
  cosignTag?: string;
  keyid?: string;
}

/** Layer annotation buildx and others name an in-toto statement's predicate type by. */
const IN_TOTO_PREDICATE_ANNOTATION = "in-toto.io/predicate-type";

const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

/**
 * Attach the VEX, the SBOM and the provenance to `subject` (the manifest or index the patch wrote)
 * as OCI 1.1 referrers, each with its artifactType. With a key, the provenance and the VEX and SBOM
 * (each wrapped in an in-toto statement about the same subjects, with the predicate types cosign
 * uses) are DSSE-signed; the envelopes go both into referrers of artifactType in-toto (cosign's
 * OCI 1.1 mode) and into cosign's `sha256-<hex>.att` image, which `cosign verify-attestation --key`
 * reads. Nothing here changes the image itself.
 */
export async function attachDocuments(
  destination: AttachDestination,
  subject: Descriptor,
  documents: AttachDocuments,
  options: { key?: SigningKey; created: Date },
): Promise<AttachResult> {
  const { key, created } = options;
  const plain: { artifact: Artifact; artifactType: string; predicateType?: string }[] = [];
  const add = (artifactType: string, mediaType: string, document: unknown, predicateType?: string) =>
    plain.push({
      artifactType,
      predicateType,
      artifact: referrerArtifact(
        subject,
        artifactType,
        [
          {
            mediaType,
            bytes: json(document),
            ...(predicateType ? { annotations: { [IN_TOTO_PREDICATE_ANNOTATION]: predicateType } } : {}),
          },
        ],
        created,
      ),
    });
  if (documents.vex !== undefined) add(ArtifactType.openvex, ArtifactType.openvex, documents.vex);
  const sbomType = documents.sbom.format === "spdx" ? ArtifactType.spdx : ArtifactType.cyclonedx;
  add(sbomType, sbomType, documents.sbom.document);

  const signed: { artifact: Artifact; predicateType: string }[] = [];
  let attEnvelopes: { bytes: Uint8Array; predicateType: string }[] | undefined;
  if (!key) {
    add(ArtifactType.inToto, ArtifactType.inToto, documents.statement, documents.statement.predicateType);
  } else {
    const statements: InTotoStatement[] = [documents.statement];
    const subjects = documents.statement.subject;
    if (documents.vex !== undefined)
      statements.push(statement(subjects, OPENVEX_PREDICATE_TYPE, documents.vex));
    statements.push(
      statement(
        subjects,
        documents.sbom.format === "spdx" ? SPDX_PREDICATE_TYPE : CYCLONEDX_PREDICATE_TYPE,
        documents.sbom.document,
      ),
    );
    const envelopes = statements.map((s) => ({
      predicateType: s.predicateType,
      bytes: json(signEnvelope(json(s), IN_TOTO_PAYLOAD_TYPE, key)),
    }));
    for (const e of envelopes) {
      const annotations = {
        [PREDICATE_TYPE_ANNOTATION]: e.predicateType,
        [IN_TOTO_PREDICATE_ANNOTATION]: e.predicateType,
      };
      signed.push({
        predicateType: e.predicateType,
        artifact: referrerArtifact(
          subject,
          ArtifactType.inToto,
          [{ mediaType: DSSE_ENVELOPE_MEDIA_TYPE, bytes: e.bytes, annotations }],
          created,
        ),
      });
    }
    attEnvelopes = envelopes;
  }

  const referrers = [...plain.map((p) => p.artifact), ...signed.map((s) => s.artifact)];
  const result: AttachResult = {
    subject: subject.digest,
    artifacts: [
      ...plain.map((p) => ({
        artifactType: p.artifactType,
        digest: p.artifact.manifest.digest,
        signed: false,
        ...(p.predicateType ? { predicateType: p.predicateType } : {}),
      })),
      ...signed.map((s) => ({
        artifactType: ArtifactType.inToto,
        digest: s.artifact.manifest.digest,
        predicateType: s.predicateType,
        signed: true,
      })),
    ],
    ...(key ? { keyid: key.keyid } : {}),
  };

  if (destination.transport === "registry") {
    const registry = openRegistryReferrers(destination.ref, destination.options);
    let withoutApi = false;
    for (const artifact of referrers) {
      const { subjectAccepted } = await registry.push(artifact);
      if (!subjectAccepted) withoutApi = true;
    }
    if (withoutApi) {
      await registry.addToReferrersTag(
        subject.digest,
        referrers.map((a) => a.descriptor),
      );
      result.referrersTag = referrersTag(subject.digest);
    }
    if (attEnvelopes) {
      result.cosignTag = cosignAttestationTag(subject.digest);
      const existing = await registry.manifestByTag(result.cosignTag);
      await registry.push(cosignAttestationImage(attEnvelopes, existing?.layers ?? []), result.cosignTag);
    }
    return result;
  }

  // An OCI layout has no referrers API: the referrers tag schema is its only discoverable form.
  const { dir, options: transport } = destination;
  const tag = referrersTag(subject.digest);
  const existing = await readLayoutIndex(dir, tag, transport);
  await writeToLayout(
    dir,
    tag,
    referrers,
    referrersIndex(
      existing,
      referrers.map((a) => a.descriptor),
    ),
    transport,
  );
  result.referrersTag = tag;
  if (attEnvelopes) {
    result.cosignTag = cosignAttestationTag(subject.digest);
    const existing = await readLayoutTag(dir, result.cosignTag, transport);
    const attImage = cosignAttestationImage(attEnvelopes, existing?.layers ?? []);
    await writeToLayout(dir, result.cosignTag, [], attImage.manifest, transport, attImage);
  }
  return result;
}

/** The manifests of the index tagged `tag` in a layout; none when the tag is not there yet. */
async function readLayoutIndex(dir: string, tag: string, options: TransportOptions): Promise<Descriptor[]> {
  return (await readLayoutTag(dir, tag, options))?.manifests ?? [];
}

/** The document tagged `tag` in a layout (verified by the layout source); undefined when the tag is not there. */
async function readLayoutTag(
  dir: string,
  tag: string,
  options: TransportOptions,
): Promise<{ manifests?: Descriptor[]; layers?: Descriptor[] } | undefined> {
  let source: Awaited<ReturnType<typeof openLayoutSource>>;
  try {
    source = await openLayoutSource(dir, tag, options);
  } catch (e) {
    if (isSutureError(e, "NOT_FOUND")) return undefined;
    throw e;
  }
  try {
    const root = await source.rootManifest();
    const what = `${dir}:${tag}`;
    return isIndexMediaType(root.mediaType)
      ? { manifests: parseJson(IndexSchema, root.bytes, what).manifests }
      : { layers: parseJson(ImageManifestSchema, root.bytes, what).layers };
  } finally {
    await source.close();
  }
}

/** Write artifacts into a layout and tag `root` (an artifact's manifest, or an index of them). */
async function writeToLayout(
  dir: string,
  tag: string,
  artifacts: readonly Artifact[],
  root: RawManifest,
  options: TransportOptions,
  rootArtifact?: Artifact,
): Promise<void> {
  const sink = await openLayoutSink(dir, tag, options);
  try {
    for (const artifact of [...artifacts, ...(rootArtifact ? [rootArtifact] : [])]) {
      for (const b of artifact.blobs)
        await sink.writeBlob(b.descriptor, async () => Readable.from([Buffer.from(b.bytes)]));
      if (artifact !== rootArtifact) await sink.writeManifest(artifact.manifest);
    }
    await sink.commit(root);
  } catch (e) {
    await sink.abort().catch(() => {});
    throw e;
  }
}
