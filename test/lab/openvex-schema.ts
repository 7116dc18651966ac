import { readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import { IRI_PATTERN } from "../../src/vex/schema.ts";

export interface VexValidation {
  valid: boolean;
  /** `instancePath: message` for each violation. */
  errors: string[];
}

/**
 * Validate a document against the official OpenVEX JSON schema file (draft 2020-12) with ajv and
 * all formats enforced. ajv-formats has no "iri" format, so it is supplied from RFC 3987's grammar
 * (absolute IRI). Tests only: the schema file is not shipped with suture and ajv is a dev
 * dependency; at run time suture checks its documents with zod (OpenVexDocumentSchema).
 */
export function validateOpenVex(doc: unknown, schemaPath: string): VexValidation {
  const schema = JSON.parse(readFileSync(schemaPath, "utf8")) as object;
  // Strict, so an unknown format fails loudly instead of being skipped; but the official schema
  // lists `required` properties inside if/then branches, which strictRequired would reject.
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, validateFormats: true });
  // ajv-formats is CommonJS: its plugin is the module itself, exposed as the namespace default.
  const addFormats = (ajvFormats as unknown as { default: (a: Ajv2020) => Ajv2020 }).default;
  addFormats(ajv);
  ajv.addFormat("iri", IRI_PATTERN);
  const validate = ajv.compile(schema);
  const valid = validate(doc) as boolean;
  return {
    valid,
    errors: (validate.errors ?? []).map((e) => `${e.instancePath || "/"}: ${e.message ?? e.keyword}`),
  };
}
