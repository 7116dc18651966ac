import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import * as ajvFormats from "ajv-formats";

/** The official schemas (see its README): CycloneDX 1.6 with the two it references, SPDX 2.3. */
export const SBOM_SCHEMAS = join(import.meta.dirname, "../../../shared/fixtures/sbom-schemas");

export interface SbomValidation {
  valid: boolean;
  /** `instancePath: message` for each violation. */
  errors: string[];
}

const load = (file: string) => JSON.parse(readFileSync(join(SBOM_SCHEMAS, file), "utf8")) as object;

let cyclonedx: ReturnType<Ajv["compile"]> | undefined;
let spdx: ReturnType<Ajv["compile"]> | undefined;

function newAjv(): Ajv {
  // Both schemas are draft-07. Formats are enforced (date-time, uri, iri-reference, …); strict mode
  // is off because the official files use keywords ajv's strict mode rejects (e.g. "meta:enum").
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true });
  // ajv-formats is CommonJS: its plugin is the module itself, exposed as the namespace default.
  const addFormats = (ajvFormats as unknown as { default: (a: Ajv) => Ajv }).default;
  addFormats(ajv);
  // ajv-formats has neither IRI references nor internationalised e-mail addresses (RFC 3987, 6531):
  // an IRI reference is a URI reference that may hold non-ASCII characters, so no spaces,
  // controls or `<>"{}|\\^\``; an internationalised address is local@domain of any characters
  // but those and `@`.
  ajv.addFormat("iri-reference", /^(?:[^\s%<>"{}|\\^`\p{Cc}]|%[0-9A-Fa-f]{2})*$/u);
  ajv.addFormat("idn-email", /^[^\s@<>]+@[^\s@<>]+$/u);
  return ajv;
}

/**
 * Validate against the official CycloneDX 1.6 JSON schema; the schemas it references by file name
 * (`spdx.schema.json`, `jsf-0.82.schema.json`) are loaded under their own ids so the $refs resolve.
 * Tests only: ajv is a dev dependency.
 */
export function validateCycloneDx(doc: unknown): SbomValidation {
  if (!cyclonedx) {
    const ajv = newAjv();
    ajv.addSchema(load("cyclonedx-spdx.schema.json"));
    ajv.addSchema(load("cyclonedx-jsf-0.82.schema.json"));
    cyclonedx = ajv.compile(load("cyclonedx-bom-1.6.schema.json"));
  }
  return run(cyclonedx, doc);
}

/** Validate against the official SPDX 2.3 JSON schema. */
export function validateSpdx(doc: unknown): SbomValidation {
  spdx ??= newAjv().compile(load("spdx-2.3-schema.json"));
  return run(spdx, doc);
}

function run(validate: ReturnType<Ajv["compile"]>, doc: unknown): SbomValidation {
  const valid = validate(doc) as boolean;
  return {
    valid,
    errors: (validate.errors ?? []).map((e) => `${e.instancePath || "/"}: ${e.message ?? e.keyword}`),
  };
}
