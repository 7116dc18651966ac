import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  mutatedJson,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  withinBudget,
} from "../../test/fuzz/fuzz.ts";
import { SutureError } from "../errors/errors.ts";
import { parseReportJson } from "./json.ts";
import { parseReportDocument } from "./read.ts";

// Property: a scanner report is the most freely user-supplied input suture reads. Whatever the
// document, `suture report` / `patch --report` either builds a plan or exits with one line of
// INVALID_REPORT naming the problem; no TypeError from a field of an unexpected type.

const FIXTURES = join(import.meta.dirname, "../../../shared/fixtures");
const json = (path: string): unknown => JSON.parse(readFileSync(join(FIXTURES, path), "utf8"));

const TRIVY = json("trivy-golden/debian-buster.json");
const TRIVY_ALPINE = json("trivy-golden/alpine-310.json");
const TRIVY_RPM = json("trivy-golden/centos-7.json");
const GRYPE = json("grype/json-image.json");
const COPA = {
  apiVersion: "v1alpha2",
  metadata: { os: { type: "debian", version: "12" }, config: { arch: "amd64", variant: "" } },
  osupdates: [
    {
      name: "libssl3",
      installedVersion: "3.0.11-1~deb12u2",
      fixedVersion: "3.0.15-1~deb12u1",
      vulnerabilityID: "CVE-2024-5535",
      type: "deb",
      class: "os-pkgs",
    },
  ],
  langupdates: [{ name: "requests", installedVersion: "2.0", fixedVersion: "2.32", type: "pip" }],
};

const CODES = ["INVALID_REPORT"] as const;
const SCANNERS = ["auto", "trivy", "grype", "native"] as const;

test("seeds are readable reports (so mutations start from real documents)", () => {
  for (const doc of [TRIVY, TRIVY_ALPINE, TRIVY_RPM, GRYPE, COPA])
    assert.ok(parseReportDocument(doc, "r.json"));
});

test("mutated reports: a plan or one-line INVALID_REPORT, for every --scanner", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(TRIVY, TRIVY_ALPINE, TRIVY_RPM, GRYPE, COPA).chain((seed) => mutatedJson(seed)),
      fc.constantFrom(...SCANNERS),
      (doc, scanner) => {
        const plan = withinBudget(PARSE_BUDGET_MS, () =>
          parsesOrFailsCleanly(CODES, () => parseReportDocument(doc, "report.json", scanner)),
        );
        if (plan) assert.ok(Array.isArray(plan.updates));
      },
    ),
    fuzzParameters(600),
  );
});

test("report bytes: JSON or one-line INVALID_REPORT (tar, gzip, garbage, broken JSON)", () => {
  const text = JSON.stringify(COPA, null, 2);
  fc.assert(
    fc.property(
      fc.oneof(
        hostileText([text, JSON.stringify(TRIVY).slice(0, 3000)]).map((t) => Buffer.from(t)),
        fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
      ),
      (bytes) => {
        const doc = withinBudget(PARSE_BUDGET_MS, () =>
          parsesOrFailsCleanly(CODES, () => parseReportJson(bytes, "r.json")),
        );
        if (doc !== undefined) parsesOrFailsCleanly(CODES, () => parseReportDocument(doc, "r.json"));
      },
    ),
    fuzzParameters(500),
  );
});

// Regression: a case the properties above found, kept as a plain test.
test("regression: broken report JSON is one line of INVALID_REPORT", () => {
  assert.throws(
    () => parseReportJson(Buffer.from('\0\n  "apiVersion"'), "r.json"),
    (e: Error) =>
      e instanceof SutureError &&
      e.code === "INVALID_REPORT" &&
      !/[\r\n]/.test(e.message) &&
      e.message.includes('\\n  "apiVersion"'),
  );
});

test("regression: names of Object.prototype members in a report are plain unknown values", () => {
  const doc = structuredClone(GRYPE) as {
    matches: { artifact: { type: string } }[];
    distro?: { name: string };
  };
  doc.matches[0]!.artifact.type = "__proto__";
  doc.distro = { name: "constructor" };
  const plan = parseReportDocument(doc, "grype.json", "grype");
  assert.equal(plan.os?.family, "constructor");
  assert.ok(plan.skipped.some((s) => s.type === "__proto__"));
});
