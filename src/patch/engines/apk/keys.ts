import { basename } from "node:path";
import type { ApkConfig } from "../../../distro/apk/config.ts";
import { type ApkKeyring, apkKeyring, mergeApkKeyrings } from "../../../distro/apk/signature.ts";
import { quoteUntrusted } from "../../../distro/package-syntax.ts";
import { describeCause, isSutureError, SutureError } from "../../../errors/errors.ts";
import { readFileCapped } from "../../../fs/read-capped.ts";
import type { ProgressSink } from "../../../progress/events.ts";
import { keyringFilesOf } from "../engine.ts";

/** Largest key file read from `--keyring` (an RSA public key in PEM is under 2 KiB). */
const MAX_KEY_BYTES = 64 * 1024;

/**
 * The keys both apk engines trust: the image's (`ApkConfig.keys`: its /etc/apk/keys, or Alpine's
 * /usr/share/apk/keys/<arch> when it has none) and the `--keyring NAME.rsa.pub` files. An image key apk
 * could not use either is left out with a warning; a `--keyring` file that is no key is an error.
 */
export async function trustedKeys(
  config: Pick<ApkConfig, "keys">,
  keyringFiles: readonly string[],
  progress: ProgressSink,
): Promise<{ keyring: ApkKeyring; pems: Map<string, Buffer> }> {
  const pems = new Map<string, Buffer>();
  const rings: ApkKeyring[] = [];
  for (const [name, pem] of config.keys) {
    try {
      rings.push(apkKeyring([{ name, pem }], "the image's /etc/apk/keys"));
      pems.set(name, pem);
    } catch (e) {
      if (!isSutureError(e)) throw e;
      progress({ type: "warning", message: `${e.message} (left out)` });
    }
  }
  for (const file of keyringFilesOf("apk-rsa", keyringFiles)) {
    let pem: Buffer;
    try {
      pem = await readFileCapped(file, { limit: MAX_KEY_BYTES, what: `--keyring ${file}` });
    } catch (e) {
      if (isSutureError(e)) throw e;
      throw new SutureError(
        "USAGE",
        `--keyring ${quoteUntrusted(file)} cannot be read (${describeCause(e)}): give the path of an apk public key file NAME.rsa.pub`,
        { cause: e },
      );
    }
    const name = basename(file);
    rings.push(apkKeyring([{ name, pem }], `--keyring ${file}`));
    pems.set(name, pem);
  }
  return { keyring: mergeApkKeyrings(rings), pems };
}
