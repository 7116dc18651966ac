import type { Image } from "../image/image.ts";
import { Annotation, BaseImageLabel, MediaType, SutureLabel } from "../oci/media-types.ts";
import { editImage, type FileLayer, removeTopLayers } from "./mutate.ts";

/**
 * How suture marks the one layer it adds, so that re-patching replaces it: pure functions from
 * image values to image values.
 */

/** Whether the image's top layer is a patch layer suture added (re-patching replaces it). */
export function hasSuturePatchLayer(image: Image): boolean {
  const previous = image.config.config?.Labels?.[SutureLabel.patchedLayerDiffId];
  return previous !== undefined && image.config.rootfs.diff_ids.at(-1) === previous;
}

/** The image without suture's patch layer (itself when it has none): re-patching starts from the original layers. */
export function withoutSuturePatchLayer(image: Image): Image {
  return hasSuturePatchLayer(image) ? removeTopLayers(image, 1) : image;
}

/**
 * The config digest of the image suture first patched, as recorded in a patched image's label:
 * undefined for an image suture did not patch, null when an older suture patched it without
 * recording it (or the label is not a digest).
 */
export function recordedOriginalConfig(image: Image): string | null | undefined {
  if (!hasSuturePatchLayer(image)) return undefined;
  const recorded = image.config.config?.Labels?.[SutureLabel.baseConfig];
  return recorded && /^sha256:[0-9a-f]{64}$/.test(recorded) ? recorded : null;
}

export interface PatchAnnotation {
  /** The patch time, `YYYY-MM-DDTHH:MM:SSZ`. */
  created: string;
  /** Name recorded as the original image (BaseImage label, base.name annotation). */
  baseName: string;
  /** How many packages the layer updates (in the history entry). */
  packageCount: number;
  /**
   * The config digest a report of the unpatched image names: the recorded one when `base` came
   * from a re-patch, else the original's own; null keeps it unrecorded (an older suture's patch).
   */
  originalConfig: string | null;
}

/**
 * `base` (an image without a suture patch layer) with `layer` appended, its history, labels and
 * (OCI manifests only: Docker schema 2 has no annotations) annotations saying what suture did.
 */
export function appendPatchLayer(base: Image, layer: FileLayer, note: PatchAnnotation): Image {
  const { created } = note;
  return editImage(base, {
    addLayers: [layer],
    config: (c) => {
      c.created = created;
      c.history = [
        ...(c.history ?? []),
        { created, created_by: `suture patch (${note.packageCount} packages)`, comment: "suture" },
      ];
      c.config ??= {};
      c.config.Labels = {
        ...(c.config.Labels ?? {}),
        [BaseImageLabel]: note.baseName,
        [SutureLabel.patchedLayerDiffId]: layer.diffID,
      };
      if (note.originalConfig !== null) c.config.Labels[SutureLabel.baseConfig] = note.originalConfig;
    },
    manifest: (m) => {
      if ((m.mediaType ?? base.manifest.mediaType) !== MediaType.ociManifest) return;
      m.annotations = {
        ...(m.annotations ?? {}),
        [Annotation.created]: created,
        [Annotation.copaPatched]: created,
        [Annotation.baseName]: note.baseName,
        [Annotation.baseDigest]: base.manifest.digest,
      };
    },
  });
}
