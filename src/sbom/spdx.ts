import { createHash } from "node:crypto";
import { contentUuid, formatTime, imagePurl, platformName, type SbomSubject } from "./document.ts";
import type { SbomPackage } from "./inventory.ts";

/**
 * SPDX 2.3 JSON. The document DESCRIBES the image (a package of purpose CONTAINER, its version the
 * manifest digest, its purl the oci one); the image CONTAINS its OS (purpose OPERATING_SYSTEM) and
 * the OS CONTAINS each installed package (purpose LIBRARY, purl as a PACKAGE-MANAGER external
 * reference, `sourceInfo` naming the source package), as Trivy lays out image SBOMs. An index is
 * one document describing the index, which CONTAINS each platform image.
 *
 * A package a suture patch updated gets an annotation (type OTHER, by the tool) naming the version
 * and purl it replaced. Not a VARIANT_OF/DESCENDANT_OF relationship: those need the old package as
 * an element of the document, and listing it as a package would say the image holds it.
 */

interface SpdxPackage {
  SPDXID: string;
  name: string;
  versionInfo?: string;
  supplier?: string;
  downloadLocation: string;
  filesAnalyzed: boolean;
  licenseConcluded?: string;
  licenseDeclared?: string;
  copyrightText?: string;
  sourceInfo?: string;
  externalRefs?: { referenceCategory: string; referenceType: string; referenceLocator: string }[];
  primaryPackagePurpose: string;
  annotations?: { annotationDate: string; annotationType: string; annotator: string; comment: string }[];
  comment?: string;
}

export function buildSpdx(input: {
  subject: SbomSubject;
  toolVersion: string;
  timestamp: Date;
}): Record<string, unknown> {
  const { subject } = input;
  const created = formatTime(input.timestamp);
  const tool = `Tool: suture-${input.toolVersion}`;
  const packages = new Map<string, SpdxPackage>();
  const relationships: { spdxElementId: string; relationshipType: string; relatedSpdxElement: string }[] = [];
  const contains = (a: string, b: string) =>
    relationships.push({ spdxElementId: a, relationshipType: "CONTAINS", relatedSpdxElement: b });

  const container = (image: { name: string; digest: string; repository?: string }, arch?: string) => {
    const purl = imagePurl(image, arch);
    const pkg: SpdxPackage = {
      SPDXID: spdxId("ContainerImage", `${image.name}@${image.digest}`),
      name: image.name,
      versionInfo: image.digest,
      downloadLocation: "NOASSERTION",
      filesAnalyzed: false,
      primaryPackagePurpose: "CONTAINER",
      ...(purl ? { externalRefs: [purlRef(purl)] } : {}),
    };
    packages.set(pkg.SPDXID, pkg);
    return pkg.SPDXID;
  };

  const described = subject.index ? container(subject.index) : container(subject.images[0]!);
  for (const image of subject.images) {
    const imageId = subject.index ? container(image, image.platform.architecture) : described;
    if (subject.index) {
      packages.get(imageId)!.comment = `platform ${platformName(image)}`;
      contains(described, imageId);
    }
    let parent = imageId;
    if (image.os) {
      const os: SpdxPackage = {
        SPDXID: spdxId("OperatingSystem", `${image.os.family}-${image.os.release}@${image.digest}`),
        name: image.os.family,
        ...(image.os.release ? { versionInfo: image.os.release } : {}),
        downloadLocation: "NOASSERTION",
        filesAnalyzed: false,
        primaryPackagePurpose: "OPERATING_SYSTEM",
      };
      packages.set(os.SPDXID, os);
      contains(imageId, os.SPDXID);
      parent = os.SPDXID;
    }
    for (const p of image.packages) {
      const pkg = packageOf(p, created, tool);
      const seen = packages.get(pkg.SPDXID);
      if (seen && JSON.stringify(seen) !== JSON.stringify(pkg)) {
        pkg.SPDXID = spdxId("Package", `${p.purl}#${platformName(image)}`);
      }
      packages.set(pkg.SPDXID, pkg);
      contains(parent, pkg.SPDXID);
    }
  }
  relationships.sort(
    (a, b) =>
      compare(a.spdxElementId, b.spdxElementId) ||
      compare(a.relationshipType, b.relationshipType) ||
      compare(a.relatedSpdxElement, b.relatedSpdxElement),
  );
  relationships.unshift({
    spdxElementId: "SPDXRef-DOCUMENT",
    relationshipType: "DESCRIBES",
    relatedSpdxElement: described,
  });
  const name = subject.index?.name ?? subject.images[0]!.name;
  const body = {
    spdxVersion: "SPDX-2.3",
    dataLicense: "CC0-1.0",
    SPDXID: "SPDXRef-DOCUMENT",
    name,
    creationInfo: { creators: [tool], created },
    packages: [...packages.values()].sort((a, b) => compare(a.SPDXID, b.SPDXID)),
    relationships,
  };
  // The namespace must be unique to this document: derived from its content, time included.
  const slug = name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "image";
  return {
    spdxVersion: body.spdxVersion,
    dataLicense: body.dataLicense,
    SPDXID: body.SPDXID,
    name: body.name,
    documentNamespace: `https://spdx.org/spdxdocs/suture/${slug}-${contentUuid(body)}`,
    creationInfo: body.creationInfo,
    packages: body.packages,
    relationships: body.relationships,
  };
}

function packageOf(p: SbomPackage, created: string, tool: string): SpdxPackage {
  const source = p.source
    ? `built package from: ${p.source.name} ${p.source.epoch ? `${p.source.epoch}:` : ""}${p.source.version}${p.source.release ? `-${p.source.release}` : ""}`
    : undefined;
  return {
    SPDXID: spdxId("Package", p.purl),
    name: p.name,
    versionInfo: p.version,
    supplier: "NOASSERTION",
    downloadLocation: "NOASSERTION",
    filesAnalyzed: false,
    licenseConcluded: "NOASSERTION",
    licenseDeclared: p.license && isSpdxExpression(p.license) ? p.license : "NOASSERTION",
    copyrightText: "NOASSERTION",
    ...(source ? { sourceInfo: source } : {}),
    externalRefs: [purlRef(p.purl)],
    primaryPackagePurpose: "LIBRARY",
    ...(p.previous
      ? {
          annotations: [
            {
              annotationDate: created,
              annotationType: "OTHER",
              annotator: tool,
              comment: `suture patch: updated from ${p.previous.version} (${p.previous.purl}) to ${p.version} with the distribution's own package`,
            },
          ],
        }
      : {}),
  };
}

function purlRef(purl: string) {
  return { referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: purl };
}

/** `SPDXRef-<kind>-<16 hex>`: stable for the same element, and only the characters SPDX IDs allow. */
function spdxId(kind: string, key: string): string {
  return `SPDXRef-${kind}-${createHash("sha256").update(key).digest("hex").slice(0, 16)}`;
}

/**
 * Whether a declared license reads as an SPDX license expression (identifiers, LicenseRef-s,
 * AND/OR/WITH, parentheses). apk and rpm license fields are free text (`GPL-2.0-or-later`,
 * `GPLv2+ and LGPLv2+`, `custom`): what is not an expression is NOASSERTION here, and CycloneDX
 * keeps the text as the license's name.
 */
function isSpdxExpression(text: string): boolean {
  const tokens = text.replace(/[()]/g, " ").split(/\s+/).filter(Boolean);
  if (tokens.length === 0) return false;
  let wantId = true;
  for (const t of tokens) {
    if (wantId) {
      if (!/^(?:LicenseRef-[A-Za-z0-9.-]+|[A-Za-z0-9][A-Za-z0-9.-]*\+?)$/.test(t)) return false;
      if (/^(?:AND|OR|WITH|and|or|with)$/.test(t)) return false;
      // Identifiers: the SPDX list's have a hyphen or a digit or are short all-caps (MIT, ISC).
      if (!/[-.\d]/.test(t) && !/^[A-Z]{2,}$/.test(t)) return false;
    } else if (!/^(?:AND|OR|WITH)$/.test(t)) return false;
    wantId = !wantId;
  }
  return !wantId;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
