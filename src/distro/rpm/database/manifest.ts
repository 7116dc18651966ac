import { SutureError } from "../../../errors/errors.ts";
import { checkPackageFields, quoteUntrusted } from "../../package-syntax.ts";
import { formatRpmEvr, type RpmNevra } from "../header.ts";

/**
 * Azure Linux (CBL-Mariner) distroless images keep no rpm database, only
 * `/var/lib/rpmmanifest/container-manifest-2`: one line per installed package, the output of
 *
 *   rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\t%{INSTALLTIME}\t%{BUILDTIME}\t%{VENDOR}\t%{EPOCH}\t%{SIZE}\t%{ARCH}\t%{EPOCHNUM}\t%{SOURCERPM}\n'
 *
 * at image build time (Azure Linux's toolkit docs; Trivy's rpmqa analyzer and syft read the same
 * ten fields). The sixth field is `(none)` when the package has no epoch; EPOCHNUM is the epoch
 * as a number, 0 for none, and is what is used here. (Trivy ignores both epoch fields: for a
 * package with an epoch its reported version lacks it, while rpm and this reader keep it.)
 */

export const RPM_MANIFEST_PATH = "/var/lib/rpmmanifest/container-manifest-2";

export interface RpmManifestEntry {
  /** The line (1-based) the package is on. */
  line: number;
  nevra: RpmNevra;
  sourceRpm?: string;
  vendor?: string;
}

const FIX = "the image's rpm manifest is damaged; rebuild the image or restore the file from the original";

/** Every package line of a container-manifest-2; `what` names it in errors. */
export function parseRpmManifest(text: string, what: string): RpmManifestEntry[] {
  const entries: RpmManifestEntry[] = [];
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "") continue;
    const where = `${what} line ${i + 1}`;
    const fields = line.split("\t");
    if (fields.length !== 10) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${where} has ${fields.length} tab-separated fields, not 10: ${quoteUntrusted(line)}; ${FIX}`,
      );
    }
    const [name, versionRelease, , , vendor, , , arch, epochNum, sourceRpm] = fields as [string, ...string[]];
    const parts = versionRelease!.split("-");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${where} has the version ${quoteUntrusted(versionRelease!)}, not VERSION-RELEASE; ${FIX}`,
      );
    }
    if (!/^\d{1,10}$/.test(epochNum!) || Number(epochNum) > 0xffffffff) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${where} has the epoch ${quoteUntrusted(epochNum!)}, not a number; ${FIX}`,
      );
    }
    const epoch = Number(epochNum);
    const nevra: RpmNevra = {
      name,
      version: parts[0]!,
      release: parts[1]!,
      ...(epoch === 0 ? {} : { epoch }),
      ...(arch === "(none)" || arch === "" ? {} : { arch: arch! }),
    };
    if (/:/.test(nevra.version) || /:/.test(nevra.release)) {
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${where} has the version ${quoteUntrusted(versionRelease!)} with a ':'; ${FIX}`,
      );
    }
    checkPackageFields(
      "rpm",
      {
        name,
        version: formatRpmEvr(nevra),
        ...(nevra.arch === undefined ? {} : { architecture: nevra.arch }),
      },
      where,
      FIX,
    );
    entries.push({
      line: i + 1,
      nevra,
      ...(sourceRpm === "(none)" || sourceRpm === "" ? {} : { sourceRpm: sourceRpm! }),
      ...(vendor === "(none)" || vendor === "" ? {} : { vendor: vendor! }),
    });
  }
  return entries;
}
