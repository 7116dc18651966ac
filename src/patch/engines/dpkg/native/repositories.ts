import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type AptConfig, aptLocations, readAptConfig } from "../../../../distro/dpkg/apt-conf.ts";
import { readAptPreferences } from "../../../../distro/dpkg/apt-preferences.ts";
import { openRepositories, type Repository } from "../../../../distro/dpkg/repository.ts";
import {
  type AptSource,
  applyMirrors,
  defaultSourcesFor,
  type ImageFileAccess,
  readAptSources,
  refuseSourcesMarkedTrusted,
} from "../../../../distro/dpkg/sources.ts";
import type { OsRelease } from "../../../../distro/os-release.ts";
import { SutureError } from "../../../../errors/errors.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import {
  imageKeyringProvider,
  type KeyFileAccess,
  keyringOf,
  parseKeyring,
} from "../../../../trust/keyring.ts";
import { keyringFilesOf } from "../../engine.ts";
import { CandidatePolicy, policyFile } from "./policy.ts";

export interface ImageRepositoriesOptions {
  /** dpkg architecture of the image (`amd64`, `arm64`, `armhf`, …). */
  arch: string;
  /** Where verified indexes are cached (shared between runs and images). */
  cacheDir: string;
  mirrors?: Readonly<Record<string, string>>;
  /**
   * A keyring file to trust for the default sources of images without apt configuration
   * (distroless). Default: the distribution's archive keyring as installed on this host.
   */
  /** `--keyring` files; the OpenPGP ones (not apk's `*.rsa.pub`) stand in for missing Signed-By keyrings. */
  keyringFiles?: readonly string[];
  progress?: ProgressSink;
  signal?: AbortSignal;
  /**
   * The user accepts what an image's `Acquire::AllowInsecureRepositories` allows (unsigned suites);
   * without it such an image is refused.
   */
  allowInsecureRepositories?: boolean;
}

/** apt.conf settings that let apt use repositories it cannot verify. */
const INSECURE_SETTINGS = [
  "Acquire::AllowInsecureRepositories",
  "Acquire::AllowDowngradeToInsecureRepositories",
  "APT::Get::AllowUnauthenticated",
];

/**
 * The verified apt repositories an image's packages come from: the image's own sources (trusted
 * keys resolved inside the image, as its apt would), or, when it has none (distroless, chiseled),
 * the official suites of the release its os-release names, trusted with `keyringFiles` or the
 * host's copy of the distribution's archive keyring. Mirrors replace URIs but never trust.
 *
 * The image's apt configuration is honoured where it changes what is fetched, trusted or chosen:
 * `Dir::Etc::*` locations, `Acquire::Check-Valid-Until`, `APT::Default-Release`, its apt
 * preferences (the returned `policy`); settings that allow unsigned repositories are refused
 * (UNTRUSTED) unless `allowInsecureRepositories`.
 */
export async function openImageRepositories(
  files: ImageFileAccess,
  os: OsRelease | undefined,
  options: ImageRepositoriesOptions,
): Promise<{
  sources: AptSource[];
  repositories: Repository[];
  imageSources: boolean;
  policy: CandidatePolicy;
  config: AptConfig;
}> {
  const warn = (message: string) => options.progress?.({ type: "warning", message });
  const config = await readAptConfig(files, { warn });
  const insecure = INSECURE_SETTINGS.filter((k) => config.getBool(k, false));
  if (insecure.length && !options.allowInsecureRepositories) {
    throw new SutureError(
      "UNTRUSTED",
      `the image's apt configuration sets ${insecure.map((k) => `${k} "true"`).join(", ")}, which lets apt install from repositories it cannot verify: remove it from the image, or pass --allow-insecure-repositories to accept unsigned repositories as the image's apt would`,
    );
  }
  for (const scheme of ["http", "https"]) {
    const proxy = config.get(`Acquire::${scheme}::Proxy`);
    if (proxy) {
      warn(
        `the image's apt configuration sets Acquire::${scheme}::Proxy "${proxy}": not used, suture fetches through the host's proxy settings (${scheme}_proxy)`,
      );
    }
  }
  const locations = aptLocations(config);
  // Read before any download: a broken preferences file fails the patch at once, as it fails apt.
  const pins = await readAptPreferences(files, locations, warn);
  let sources = await readAptSources(files, locations);
  if (!options.allowInsecureRepositories) refuseSourcesMarkedTrusted(sources);
  const imageSources = sources.length > 0;
  if (!imageSources) {
    if (!os) {
      throw new SutureError(
        "UNSUPPORTED_OS",
        "the image has no apt sources and no os-release, so suture cannot tell where its packages come from: pass --mirror or add /etc/apt/sources.list.d to the image",
      );
    }
    sources = defaultSourcesFor(os, { arch: options.arch });
  }
  if (options.mirrors) sources = applyMirrors(sources, options.mirrors);
  const fallback = await hostKeyFiles(options.keyringFiles);
  const imageKeyring = imageKeyringProvider(files, {
    fallback,
    trusted: { file: locations.trusted, parts: locations.trustedParts },
  });
  const allowUnsigned = insecure.length > 0 && options.allowInsecureRepositories === true;
  // A repository apt may use unsigned needs no key; one that is signed still needs the right one.
  const keyringFor: typeof imageKeyring = allowUnsigned
    ? (source) => imageKeyring(source).catch(() => keyringOf([], []))
    : imageKeyring;
  const repositories = await openRepositories(sources, {
    arch: options.arch,
    cacheDir: join(options.cacheDir, "apt-native"),
    keyringFor,
    progress: options.progress,
    signal: options.signal,
    checkValidUntil: config.getBool("Acquire::Check-Valid-Until", true),
    allowUnsigned,
  });
  let policy: CandidatePolicy;
  try {
    policy = new CandidatePolicy({
      indexes: repositories.flatMap((r) =>
        r.indexes.map((index) => ({ index, file: policyFile(r.release, index) })),
      ),
      pins,
      defaultRelease: config.get("APT::Default-Release") || undefined,
      arch: options.arch,
    });
  } catch (e) {
    // The indexes hold their cached files open (a service runs many patches in one process).
    for (const r of repositories) for (const index of r.indexes) index.release?.();
    throw e;
  }
  return { sources, repositories, imageSources, policy, config };
}

/**
 * Key files looked up on the host when the image lacks the Signed-By keyring: the user's
 * `--keyring` file stands in for any path; without one, the host's own keyrings (Debian hosts ship
 * debian-archive-keyring, which the sandbox's real archive traffic is verified with too).
 */
async function hostKeyFiles(keyringFiles: readonly string[] = []): Promise<KeyFileAccess> {
  const openpgp = keyringFilesOf("openpgp", keyringFiles);
  if (openpgp.length > 0) {
    const rings = await Promise.all(
      openpgp.map(async (file) => {
        const bytes = await readFile(file).catch((e) => {
          throw new SutureError("USAGE", `cannot read --keyring ${file}: ${(e as Error).message}`);
        });
        return parseKeyring(bytes, file); // fail early and clearly on a file that is no keyring
      }),
    );
    // One binary keyring of them all: binary OpenPGP key packets concatenate.
    const bytes = Buffer.concat(rings.flatMap((r) => r.keys.map((k) => k.write())));
    return { readFile: async () => bytes, listDir: async () => [] };
  }
  return {
    readFile: async (path) => {
      if (!path.startsWith("/usr/share/keyrings/")) return undefined;
      return readFile(path).catch(() => undefined);
    },
    listDir: async () => [],
  };
}
