import { z } from "zod";
import { describeCause, quoteUntrusted, SutureError } from "../errors/errors.ts";

const digestPattern = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export const PlatformSchema = z.looseObject({
  architecture: z.string(),
  os: z.string(),
  "os.version": z.string().optional(),
  "os.features": z.array(z.string()).optional(),
  variant: z.string().optional(),
  features: z.array(z.string()).optional(),
});
export type Platform = z.infer<typeof PlatformSchema>;

export const DescriptorSchema = z.looseObject({
  mediaType: z.string(),
  digest: z.string().regex(digestPattern, "not a digest"),
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: PlatformSchema.optional(),
  artifactType: z.string().optional(),
  data: z.string().optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const ImageManifestSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  subject: DescriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageManifest = z.infer<typeof ImageManifestSchema>;

export const IndexSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  manifests: z.array(DescriptorSchema),
  subject: DescriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type Index = z.infer<typeof IndexSchema>;

const HistorySchema = z.looseObject({
  created: z.string().optional(),
  created_by: z.string().optional(),
  author: z.string().optional(),
  comment: z.string().optional(),
  empty_layer: z.boolean().optional(),
});
export type History = z.infer<typeof HistorySchema>;

export const ImageConfigSchema = z.looseObject({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  "os.version": z.string().optional(),
  created: z.string().optional(),
  author: z.string().optional(),
  config: z
    .looseObject({
      User: z.string().optional(),
      Env: z.array(z.string()).nullish(),
      Entrypoint: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      WorkingDir: z.string().optional(),
      Labels: z.record(z.string(), z.string()).nullish(),
    })
    .optional(),
  rootfs: z.looseObject({ type: z.string(), diff_ids: z.array(z.string()) }),
  history: z.array(HistorySchema).optional(),
});
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

/**
 * Where the first problem a schema found is and what it is, for a one-line message:
 * `annotations.x: Invalid input: expected string, received number`. Keys come from the document,
 * so any that could break the line is quoted; zod's messages name the expected type, never the
 * value (which may be a secret, as in a Docker config.json).
 */
export function describeFirstIssue(error: z.ZodError): string {
  const issue = error.issues[0]!;
  const joined = issue.path.join(".");
  const path = !issue.path.length ? "(root)" : /^[\w.$@-]+$/.test(joined) ? joined : quoteUntrusted(joined);
  return `${path}: ${issue.message}`;
}

/** Parse and validate JSON bytes against a schema; errors name the document and the bad field. */
export function parseJson<T>(schema: z.ZodType<T>, bytes: Uint8Array | string, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(typeof bytes === "string" ? bytes : Buffer.from(bytes).toString("utf8"));
  } catch (e) {
    // describeCause: V8's message quotes the text around the error, line breaks included.
    throw new SutureError("INVALID_MANIFEST", `${what} is not valid JSON: ${describeCause(e)}`, {
      cause: e,
    });
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new SutureError("INVALID_MANIFEST", `${what} is malformed at ${describeFirstIssue(result.error)}`, {
      cause: result.error,
    });
  }
  return result.data;
}

/** A manifest as stored: the exact bytes (digests are over these), their media type and digest. */
export interface RawManifest {
  readonly bytes: Uint8Array;
  readonly mediaType: string;
  readonly digest: string;
}

/** Detect a manifest's media type from its bytes when a transport does not tell us. */
export function sniffManifestMediaType(bytes: Uint8Array): string {
  let doc: { mediaType?: unknown; manifests?: unknown; config?: unknown; schemaVersion?: unknown };
  try {
    doc = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (e) {
    throw new SutureError("INVALID_MANIFEST", "manifest is not valid JSON", { cause: e });
  }
  // `null`, a number or a string is valid JSON but no manifest: reading fields off it would crash.
  if (!doc || typeof doc !== "object") {
    throw new SutureError("INVALID_MANIFEST", "manifest is not a JSON object");
  }
  if (typeof doc.mediaType === "string") return doc.mediaType;
  if (Array.isArray(doc.manifests)) return "application/vnd.oci.image.index.v1+json";
  if (doc.config) return "application/vnd.oci.image.manifest.v1+json";
  if (doc.schemaVersion === 1) return "application/vnd.docker.distribution.manifest.v1+json";
  throw new SutureError(
    "INVALID_MANIFEST",
    "cannot tell what kind of manifest this is (no mediaType, config or manifests)",
  );
}
