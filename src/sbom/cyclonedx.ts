import { contentUuid, formatTime, imagePurl, imageRef, platformName, type SbomSubject } from "./document.ts";
import type { SbomImage, SbomPackage } from "./inventory.ts";

/**
 * CycloneDX 1.6 JSON. The shape follows Trivy's image SBOMs, so tools that read those (Trivy's own
 * `trivy sbom`, Dependency-Track) read these: metadata.component is the image (type container,
 * name the reference, version the manifest digest); the OS is an `operating-system` component the
 * image depends on, and the OS depends on every package; packages are `library` components whose
 * bom-ref is their purl, with Trivy's `aquasecurity:trivy:*` properties (PkgID, PkgType, SrcName,
 * SrcVersion, SrcRelease, SrcEpoch) that its SBOM scanning matches source packages by.
 *
 * A package a suture patch updated carries its old self in `pedigree.ancestors` (the component it
 * replaced: same name, old version and purl) with a note saying so. No `pedigree.patches`: those
 * describe source changes (a backport, a cherry-pick, with a diff and the issues resolved), and
 * suture changed no source; it installed the distribution's own newer build.
 *
 * An index (several platforms) is one document: metadata.component is the index, each platform
 * image is a container component it depends on, and each image depends on its own OS component.
 * A package identical on two platforms (an `arch=all` deb) is one component both OSes depend on.
 */

interface Property {
  name: string;
  value: string;
}

export function buildCycloneDx(input: {
  subject: SbomSubject;
  toolVersion: string;
  timestamp: Date;
}): Record<string, unknown> {
  const { subject } = input;
  const components = new Map<string, Record<string, unknown>>();
  const dependencies = new Map<string, Set<string>>();
  const depend = (from: string, to: string) => {
    let set = dependencies.get(from);
    if (!set) {
      set = new Set();
      dependencies.set(from, set);
    }
    set.add(to);
  };
  const multi = subject.index !== undefined;
  let root: Record<string, unknown>;
  if (subject.index) {
    root = containerComponent(subject.index, imageRef(subject.index), imagePurl(subject.index), []);
  } else {
    const only = subject.images[0]!;
    root = imageComponent(only, false);
  }
  const rootRef = root["bom-ref"] as string;
  dependencies.set(rootRef, new Set());
  for (const image of subject.images) {
    let imageBomRef = rootRef;
    if (multi) {
      const c = imageComponent(image, true);
      imageBomRef = c["bom-ref"] as string;
      components.set(imageBomRef, c);
      depend(rootRef, imageBomRef);
    }
    dependencies.set(imageBomRef, dependencies.get(imageBomRef) ?? new Set());
    const osRef = image.os ? `os:${image.os.family}-${image.os.release}@${image.digest}` : imageBomRef;
    if (image.os) {
      components.set(osRef, {
        "bom-ref": osRef,
        type: "operating-system",
        name: image.os.family,
        ...(image.os.release ? { version: image.os.release } : {}),
        ...(image.os.prettyName ? { description: image.os.prettyName } : {}),
        properties: [
          { name: "aquasecurity:trivy:Class", value: "os-pkgs" },
          { name: "aquasecurity:trivy:Type", value: image.os.family },
        ],
      });
      depend(imageBomRef, osRef);
      dependencies.set(osRef, dependencies.get(osRef) ?? new Set());
    }
    for (const p of image.packages) {
      const c = packageComponent(p, image);
      let ref = p.purl;
      const seen = components.get(ref);
      if (seen && JSON.stringify(seen) !== JSON.stringify(c)) {
        // Same purl, different facts (updated on one platform only): keep both, told apart.
        ref = `${p.purl}#${platformName(image)}`;
        c["bom-ref"] = ref;
      }
      components.set(ref, c);
      depend(osRef, ref);
      dependencies.set(ref, dependencies.get(ref) ?? new Set());
    }
  }

  const body = {
    bomFormat: "CycloneDX",
    specVersion: "1.6",
    version: 1,
    metadata: {
      timestamp: formatTime(input.timestamp),
      tools: {
        components: [{ type: "application", name: "suture", version: input.toolVersion }],
      },
      component: root,
    },
    components: [...components.values()].sort(byRef),
    dependencies: [...dependencies]
      .map(([ref, on]) => ({ ref, dependsOn: [...on].sort() }))
      .sort((a, b) => compare(a.ref, b.ref)),
  };
  return {
    $schema: "http://cyclonedx.org/schema/bom-1.6.schema.json",
    bomFormat: body.bomFormat,
    specVersion: body.specVersion,
    serialNumber: `urn:uuid:${contentUuid(body)}`,
    version: body.version,
    metadata: body.metadata,
    components: body.components,
    dependencies: body.dependencies,
  };
}

function imageComponent(image: SbomImage, withArch: boolean): Record<string, unknown> {
  const arch = withArch ? image.platform.architecture : undefined;
  return containerComponent(image, imageRef(image, arch), imagePurl(image, arch), [
    { name: "suture:platform", value: platformName(image) },
  ]);
}

function containerComponent(
  image: { name: string; digest: string },
  ref: string,
  purl: string | undefined,
  properties: Property[],
): Record<string, unknown> {
  return {
    "bom-ref": ref,
    type: "container",
    name: image.name,
    version: image.digest,
    ...(purl ? { purl } : {}),
    ...(properties.length ? { properties } : {}),
  };
}

function packageComponent(p: SbomPackage, image: SbomImage): Record<string, unknown> {
  const properties: Property[] = [
    { name: "aquasecurity:trivy:PkgID", value: `${p.name}@${p.version}` },
    { name: "aquasecurity:trivy:PkgType", value: image.os?.family ?? p.format },
  ];
  if (p.source) {
    properties.push({ name: "aquasecurity:trivy:SrcName", value: p.source.name });
    if (p.source.epoch)
      properties.push({ name: "aquasecurity:trivy:SrcEpoch", value: String(p.source.epoch) });
    if (p.source.release) properties.push({ name: "aquasecurity:trivy:SrcRelease", value: p.source.release });
    properties.push({ name: "aquasecurity:trivy:SrcVersion", value: p.source.version });
  }
  properties.sort((a, b) => compare(a.name, b.name));
  return {
    "bom-ref": p.purl,
    type: "library",
    name: p.name,
    version: p.version,
    ...(p.license ? { licenses: [{ license: { name: p.license } }] } : {}),
    purl: p.purl,
    ...(p.previous
      ? {
          pedigree: {
            ancestors: [
              { type: "library", name: p.name, version: p.previous.version, purl: p.previous.purl },
            ],
            notes: `suture patch: updated from ${p.previous.version} to ${p.version} with the distribution's own package`,
          },
        }
      : {}),
    properties,
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byRef(a: Record<string, unknown>, b: Record<string, unknown>): number {
  return compare(a["bom-ref"] as string, b["bom-ref"] as string);
}
