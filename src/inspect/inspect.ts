import {
  APK_ARCH_FILE,
  APK_REPOSITORIES_DIR,
  APK_REPOSITORIES_FILE,
  parseApkRepositories,
} from "../distro/apk/config.ts";
import { type DistroInfo, detectDistro } from "../distro/detect.ts";
import { bundledEolTable, type EolState, type EolTable, eolState } from "../eol/table.ts";
import { type Image, imagePlatform, loadImage, platformDescriptors, resolveRoot } from "../image/image.ts";
import type { ImageSource } from "../image/source.ts";
import type { Platform } from "../oci/manifest.ts";
import { formatPlatform, platformMatches } from "../oci/platform.ts";

export interface LayerSummary {
  digest: string;
  size: number;
  mediaType: string;
  diffID: string;
}

export interface ImageSummary {
  platform: string;
  digest: string;
  mediaType: string;
  created?: string;
  layers: LayerSummary[];
  config: {
    entrypoint?: string[] | null;
    cmd?: string[] | null;
    user?: string;
    env?: string[] | null;
    workingDir?: string;
    /** `80/tcp`, … (the keys of the config's ExposedPorts). */
    exposedPorts?: string[];
    labels?: Record<string, string> | null;
  };
  os?: { id: string; version?: string; codename?: string; prettyName?: string };
  packageDb: string;
  /**
   * The file the package database was read from and its format, where one format has several
   * (rpm: `sqlite`, `ndb`, `bdb` or Azure Linux's `manifest`).
   */
  packageDbFile?: { path: string; format: string };
  packageManager: string;
  packageCount?: number;
  /** The installed packages, sorted by name, when the package database was read. */
  packages?: { name: string; version: string }[];
  /**
   * The repositories the image's package manager installs from, as the image lists them (apk:
   * `/etc/apk/repositories`, then `/etc/apk/repositories.d/*.list`; a tagged one as `@tag URL`).
   */
  repositories?: string[];
  /** The architecture name the image's package manager installs for (apk: `/etc/apk/arch`). */
  packageArch?: string;
  /** Whether the image's release is still supported, by the EOL table (src/eol/). */
  eol?: EolState;
}

export interface InspectResult {
  name: string;
  digest: string;
  mediaType: string;
  /** Every platform the reference offers (one for a plain image). */
  platforms: string[];
  annotations?: Record<string, string>;
  images: ImageSummary[];
}

export interface InspectOptions {
  /** Only these platforms get a detailed summary; default: all of them. */
  platforms?: Platform[];
  /** Skip reading layers (no OS/package detection): manifests and configs only. */
  noLayers?: boolean;
  /** The EOL table to judge releases by (default the bundled one; see eol/table.ts loadEolTable). */
  eolTable?: EolTable;
  /** The day EOL states are for (default today). */
  now?: Date;
  signal?: AbortSignal;
}

/** Describe what a source holds: platforms, layers, config, OS and package database. */
export async function inspectSource(
  source: ImageSource,
  options: InspectOptions = {},
): Promise<InspectResult> {
  const root = await resolveRoot(source);
  const images: Image[] = [];
  let platforms: string[];
  let annotations: Record<string, string> | undefined;
  let manifest = root.kind === "image" ? root.image.manifest : root.index.manifest;
  if (root.kind === "image") {
    images.push(root.image);
    platforms = [formatPlatform(imagePlatform(root.image))];
    annotations = root.image.parsed.annotations;
  } else {
    const descriptors = platformDescriptors(root.index.parsed);
    platforms = descriptors.map((d) => formatPlatform(d.platform!));
    annotations = root.index.parsed.annotations;
    for (const d of descriptors) {
      if (options.platforms && !options.platforms.some((p) => platformMatches(p, d.platform!))) continue;
      images.push(
        await loadImage(source, await source.manifest(d), `${source.name} (${formatPlatform(d.platform!)})`),
      );
    }
    manifest = root.index.manifest;
  }
  const summaries: ImageSummary[] = [];
  for (const image of images) summaries.push(await summarise(image, options));
  return {
    name: source.name,
    digest: manifest.digest,
    mediaType: manifest.mediaType,
    platforms,
    annotations,
    images: summaries,
  };
}

async function summarise(image: Image, options: InspectOptions): Promise<ImageSummary> {
  const c = image.config.config ?? {};
  const summary: ImageSummary = {
    platform: formatPlatform(imagePlatform(image)),
    digest: image.manifest.digest,
    mediaType: image.manifest.mediaType,
    created: image.config.created,
    layers: image.parsed.layers.map((l, i) => ({
      digest: l.digest,
      size: l.size,
      mediaType: l.mediaType,
      diffID: image.config.rootfs.diff_ids[i]!,
    })),
    config: {
      entrypoint: c.Entrypoint,
      cmd: c.Cmd,
      user: c.User,
      env: c.Env,
      workingDir: c.WorkingDir || undefined,
      exposedPorts: exposedPorts(c.ExposedPorts),
      labels: c.Labels,
    },
    packageDb: "unknown",
    packageManager: "unknown",
  };
  if (options.noLayers) return summary;
  const distro = await detectDistro(image, { signal: options.signal });
  if (distro.osRelease) {
    summary.os = {
      id: distro.osRelease.id,
      version: distro.osRelease.versionId,
      codename: distro.osRelease.versionCodename,
      prettyName: distro.osRelease.prettyName,
    };
  }
  summary.eol = eolState(distro.osRelease, options.eolTable ?? bundledEolTable(), options.now);
  summary.packageDb = distro.packageDb;
  summary.packageManager = distro.packageManager;
  summary.packageCount = distro.installed?.size;
  if (distro.installed) {
    summary.packages = [...distro.installed]
      .map(([name, version]) => ({ name, version }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  if (distro.packageDb === "apk") Object.assign(summary, apkSettings(distro));
  if (distro.rpm)
    summary.packageDbFile = { path: distro.rpm.database.path, format: distro.rpm.database.backend };
  return summary;
}

/**
 * apk's repositories and architecture from the files detection read, parsed by the reader the apk
 * engines use (a line apk would refuse is the same one-line INVALID_MANIFEST here).
 */
function apkSettings(distro: DistroInfo): Pick<ImageSummary, "repositories" | "packageArch"> {
  const text = (path: string) => distro.files.get(path)?.toString("utf8");
  const lists = [
    APK_REPOSITORIES_FILE,
    ...[...distro.files.keys()].filter((p) => p.startsWith(APK_REPOSITORIES_DIR)).sort(),
  ];
  const repositories = lists.flatMap((path) => {
    const content = text(path);
    return content === undefined
      ? []
      : parseApkRepositories(content, path).map((r) => (r.tag ? `@${r.tag} ${r.url}` : r.url));
  });
  const arch = text(APK_ARCH_FILE)?.trim();
  return { repositories, ...(arch ? { packageArch: arch } : {}) };
}

/** The ports of a config's ExposedPorts (`{"80/tcp": {}}`), sorted; undefined when it names none. */
function exposedPorts(value: unknown): string[] | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const ports = Object.keys(value).sort();
  return ports.length ? ports : undefined;
}
