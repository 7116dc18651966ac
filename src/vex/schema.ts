import { z } from "zod";

/**
 * An absolute IRI (RFC 3987): a scheme, a colon, then characters an IRI may hold (no spaces,
 * controls or `<>"{}|\^\``; `%` only as a percent-escape). Purls and https URLs qualify; a bare
 * "CVE-2024-1234" does not, which is why statements carry the ID in `name`.
 */
export const IRI_PATTERN = /^[A-Za-z][A-Za-z0-9+.-]*:(?:[^\s%<>"{}|\\^`\p{Cc}]|%[0-9A-Fa-f]{2})+$/u;

const iri = z.string().regex(IRI_PATTERN, "not an absolute IRI");
// RFC 3339 date-time with a zone, as the schema's "date-time" format demands.
const dateTime = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/, "not an RFC 3339 date-time");

function unique<T>(items: T[]): boolean {
  return new Set(items.map((i) => JSON.stringify(i))).size === items.length;
}

const SubcomponentSchema = z.strictObject({ "@id": iri });
const ProductSchema = z.strictObject({
  "@id": iri,
  subcomponents: z.array(SubcomponentSchema).refine(unique, "subcomponents must be unique").optional(),
});

const StatementSchema = z.strictObject({
  vulnerability: z.strictObject({ "@id": iri.optional(), name: z.string().min(1) }),
  products: z.array(ProductSchema).min(1).refine(unique, "products must be unique"),
  status: z.literal("fixed"),
  status_notes: z.string().min(1).optional(),
});

/**
 * The subset of OpenVEX 0.2.0 suture writes, with the official schema's constraints (required
 * fields, formats, no extra properties, unique items, at least one statement) so documents are
 * checked at runtime where the JSON schema file is not available.
 */
export const OpenVexDocumentSchema = z.strictObject({
  "@context": z.literal("https://openvex.dev/ns/v0.2.0"),
  "@id": iri,
  author: z.string().min(1),
  timestamp: dateTime,
  version: z.number().int().min(1),
  tooling: z.string(),
  statements: z.array(StatementSchema).min(1).refine(unique, "statements must be unique"),
});

export type OpenVexDocument = z.infer<typeof OpenVexDocumentSchema>;
export type OpenVexStatement = z.infer<typeof StatementSchema>;
