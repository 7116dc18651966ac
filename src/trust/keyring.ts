import { type PublicKey, readKeys } from "openpgp";
import { describeCause, SutureError } from "../errors/errors.ts";
import type { ImageFileAccess } from "../fs/in-root.ts";

/**
 * A set of trusted OpenPGP public keys, with where they came from (for messages).
 * Values are immutable; build them with `parseKeyring`/`keyringOf`/`mergeKeyrings`.
 */
export interface Keyring {
  readonly keys: readonly PublicKey[];
  /** Human-readable origins ("/usr/share/keyrings/debian-archive-keyring.gpg", "inline key"). */
  readonly sources: readonly string[];
}

/** Which keys may sign a source (structurally the same as `SignedBy` in distro/dpkg/sources.ts). */
export type KeySelector = { path: string } | { inline: string } | { paths: string[]; fingerprints: string[] };

/** Read access to an image's files. */
export type KeyFileAccess = ImageFileAccess;

export function keyringOf(keys: readonly PublicKey[], sources: readonly string[]): Keyring {
  return { keys: [...keys], sources: [...sources] };
}

export function mergeKeyrings(rings: readonly Keyring[]): Keyring {
  return keyringOf(
    rings.flatMap((r) => r.keys),
    rings.flatMap((r) => r.sources),
  );
}

/**
 * Parse a keyring file: armored (`.asc`, one or more `PUBLIC KEY BLOCK`s) or binary (`.gpg`,
 * concatenated transferable public keys, what `gpg --export` and the *-archive-keyring packages
 * ship). Secret keys are reduced to their public part. Throws UNTRUSTED naming `name` when the
 * bytes are not an OpenPGP keyring (e.g. a GnuPG keybox, which apt cannot use either).
 */
export async function parseKeyring(bytes: Uint8Array, name: string): Promise<Keyring> {
  const head = Buffer.from(bytes.subarray(0, 64)).toString("latin1").trimStart();
  try {
    const keys = head.startsWith("-----BEGIN PGP")
      ? await readKeys({ armoredKeys: Buffer.from(bytes).toString("utf8") })
      : await readKeys({ binaryKeys: bytes });
    return keyringOf(
      keys.map((k) => (k.isPrivate() ? k.toPublic() : (k as PublicKey))),
      [name],
    );
  } catch (e) {
    throw new SutureError(
      "UNTRUSTED",
      `keyring ${name} is not a readable OpenPGP keyring (${describeCause(e)}): replace it with the repository's public key (binary .gpg or armored .asc)`,
      { cause: e },
    );
  }
}

/** Keep only keys whose primary or any subkey fingerprint is in `fingerprints` (hex, any case). */
export function selectKeys(ring: Keyring, fingerprints: readonly string[]): Keyring {
  const wanted = new Set(fingerprints.map((f) => f.replace(/\s+/g, "").toLowerCase()));
  const keys = ring.keys.filter((k) =>
    k.getKeys().some((sub) => wanted.has(sub.getFingerprint().toLowerCase())),
  );
  return keyringOf(keys, ring.sources);
}

export interface KeyringProviderOptions {
  /**
   * Where to read a Signed-By keyring the image does not contain, e.g. the host's
   * `/usr/share/keyrings/debian-archive-keyring.gpg` for distroless images (which ship no apt
   * and no keyring). Never consulted for the default trusted.gpg(.d) set.
   */
  fallback?: KeyFileAccess;
  /** apt.conf's `Dir::Etc::Trusted` and `Dir::Etc::TrustedParts` (default /etc/apt/trusted.gpg(.d)). */
  trusted?: { file: string; parts: string };
}

/**
 * A function giving the trusted keys for an apt source, resolved the way apt does inside the
 * image: Signed-By paths are read from the image (then `fallback`); an inline key is used as is;
 * Signed-By fingerprints select keys from the default set; without Signed-By the default set is
 * `/etc/apt/trusted.gpg` plus `/etc/apt/trusted.gpg.d/*.gpg|*.asc`. Parsed keyrings are cached
 * per provider. Throws UNTRUSTED when the selection yields no key.
 */
export function imageKeyringProvider(
  files: KeyFileAccess,
  options: KeyringProviderOptions = {},
): (source: { signedBy?: KeySelector; uri?: string; suite?: string }) => Promise<Keyring> {
  const cache = new Map<string, Promise<Keyring | undefined>>();
  const readRing = (path: string, allowFallback: boolean): Promise<Keyring | undefined> => {
    const key = `${allowFallback ? "f" : "i"}:${path}`;
    let p = cache.get(key);
    if (!p) {
      p = (async () => {
        let bytes = await files.readFile(path);
        let name = path;
        if (!bytes && allowFallback && options.fallback) {
          bytes = await options.fallback.readFile(path);
          name = `${path} (host fallback)`;
        }
        return bytes ? parseKeyring(bytes, name) : undefined;
      })();
      cache.set(key, p);
    }
    return p;
  };
  const defaultRing = async (): Promise<Keyring> => {
    const rings: Keyring[] = [];
    const { file, parts } = options.trusted ?? {
      file: "/etc/apt/trusted.gpg",
      parts: "/etc/apt/trusted.gpg.d",
    };
    const legacy = await readRing(file, false);
    if (legacy) rings.push(legacy);
    for (const name of await files.listDir(parts)) {
      if (!/\.(gpg|asc)$/.test(name)) continue;
      const ring = await readRing(`${parts.replace(/\/+$/, "")}/${name}`, false);
      if (ring) rings.push(ring);
    }
    return mergeKeyrings(rings);
  };
  return async (source) => {
    const label = source.uri ? `${source.uri} ${source.suite ?? ""}`.trim() : "the apt source";
    const sel = source.signedBy;
    let ring: Keyring;
    if (!sel) {
      ring = await defaultRing();
      if (!ring.keys.length) {
        throw new SutureError(
          "UNTRUSTED",
          `no trusted keys for ${label}: the image has no /etc/apt/trusted.gpg(.d) keys and the source has no Signed-By; add the repository's keyring`,
        );
      }
      return ring;
    }
    if ("inline" in sel)
      return parseKeyring(new TextEncoder().encode(sel.inline), `inline Signed-By key of ${label}`);
    const paths = "path" in sel ? [sel.path] : sel.paths;
    const rings: Keyring[] = [];
    for (const path of paths) {
      const r = await readRing(path, true);
      if (!r) {
        throw new SutureError(
          "UNTRUSTED",
          `Signed-By keyring ${path} for ${label} is not in the image: install the package that ships it or fix Signed-By`,
        );
      }
      rings.push(r);
    }
    if ("fingerprints" in sel && sel.fingerprints.length) {
      rings.push(selectKeys(await defaultRing(), sel.fingerprints));
    }
    ring = mergeKeyrings(rings);
    if (!ring.keys.length) {
      throw new SutureError(
        "UNTRUSTED",
        `Signed-By of ${label} selects no key: fix its fingerprints or keyring paths`,
      );
    }
    return ring;
  };
}
