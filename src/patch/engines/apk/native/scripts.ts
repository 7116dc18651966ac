import { readTar } from "../../../../archive/tar/read.ts";
import { TAR_END, tarPadding } from "../../../../archive/tar/write.ts";
import { APK_SCRIPT_NAMES, type ApkScriptName } from "../../../../distro/apk/package.ts";
import { APK_CHECKSUM } from "../../../../distro/apk/records.ts";
import { describeCause, SutureError } from "../../../../errors/errors.ts";
import type { EngineSandbox } from "../../engine.ts";
import { imageHasProgram, lastOutputLine, ScriptFileRunner } from "../../shared/script-files.ts";

/**
 * apk's script and trigger databases beside `/lib/apk/db/installed`, and running a package's
 * scripts the way apk runs them.
 *
 * - `scripts.tar`: one tar member per installed package's script, named
 *   `<name>-<version>.<C: checksum>.<script>` (`busybox-1.36.1-r29.Q1yY8…=.post-upgrade`), mode
 *   0755, mtime the package's build time. apk attaches a member to the installed package whose
 *   checksum it names and drops the others.
 * - `triggers`: one line per package with triggers, `<C: checksum> <glob> <glob>…`.
 */

export const SCRIPTS_DB_PATH = "/lib/apk/db/scripts.tar";
export const TRIGGERS_DB_PATH = "/lib/apk/db/triggers";
/** Where apk writes a script to run it (neither /tmp nor /run: either may be noexec). */
export const SCRIPT_EXEC_DIR = "/lib/apk/exec";
/** The environment apk gives scripts. */
const SCRIPT_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/** The scripts of the installed packages, by package checksum (`C:`), in apk's script order. */
export type ScriptsByPackage = Map<string, Map<ApkScriptName, Buffer>>;

/**
 * Read `scripts.tar`: members whose names do not parse, or name no script type, are skipped as
 * apk skips them; which package a member belongs to is the caller's business (by checksum).
 */
export async function parseScriptsTar(bytes: Buffer): Promise<ScriptsByPackage> {
  const out: ScriptsByPackage = new Map();
  try {
    for await (const { header, body } of readTar([bytes])) {
      const chunks: Buffer[] = [];
      for await (const c of body) chunks.push(c);
      if (header.type !== "file") continue;
      const type = header.path.slice(header.path.lastIndexOf("."));
      const rest = header.path.slice(0, header.path.length - type.length);
      const checksum = rest.slice(rest.lastIndexOf(".") + 1);
      if (!(APK_SCRIPT_NAMES as readonly string[]).includes(type) || !APK_CHECKSUM.test(checksum)) continue;
      const scripts = out.get(checksum) ?? new Map<ApkScriptName, Buffer>();
      out.set(checksum, scripts);
      scripts.set(type as ApkScriptName, Buffer.concat(chunks));
    }
  } catch (e) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `the image's ${SCRIPTS_DB_PATH} cannot be read (${describeCause(e)}): the image's apk database is damaged; repair it with apk fix in the image`,
      { cause: e },
    );
  }
  return out;
}

/** One package's entry of `scripts.tar`. */
export interface ScriptsOwner {
  name: string;
  version: string;
  checksum: string;
  /** Build time (`t:`), the members' mtime. */
  buildTime?: number;
  scripts: ReadonlyMap<ApkScriptName, Buffer>;
}

/** `scripts.tar` as apk writes it: each package's scripts in apk's script-type order. */
export function serializeScriptsTar(packages: readonly ScriptsOwner[]): Buffer {
  const parts: Buffer[] = [];
  for (const pkg of packages) {
    for (const type of SCRIPT_TYPE_ORDER) {
      const data = pkg.scripts.get(type);
      if (!data) continue;
      parts.push(
        scriptMemberHeader(
          `${pkg.name}-${pkg.version}.${pkg.checksum}${type}`,
          data.length,
          pkg.buildTime ?? 0,
        ),
        data,
        tarPadding(data.length),
      );
    }
  }
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

/**
 * The header apk-tools' `apk_tar_write_entry` gives a `scripts.tar` member, byte for byte (GNU
 * magic, owner names `root`, size and mtime without a terminating NUL), so that the database a
 * native patch writes is the one the image's apk writes for the same packages. The general tar
 * writer writes POSIX ustar, which apk reads just as well but which is not these bytes.
 */
function scriptMemberHeader(name: string, size: number, mtime: number): Buffer {
  const h = Buffer.alloc(512);
  const octal = (offset: number, width: number, value: number, nul: boolean) =>
    h.write(
      `${value.toString(8).padStart(nul ? width - 1 : width, "0")}${nul ? "\0" : ""}`,
      offset,
      "latin1",
    );
  // Names are `<name>-<version>.<checksum>.<script>`: checked package identities, ASCII, short.
  h.write(name.slice(0, 100), 0, "latin1");
  octal(100, 8, 0o755, true);
  octal(108, 8, 0, true);
  octal(116, 8, 0, true);
  octal(124, 12, size, false);
  octal(136, 12, mtime, false);
  h[156] = 0x30; // regular file
  h.write("ustar  ", 257, "latin1");
  h.write("root", 265, "latin1");
  h.write("root", 297, "latin1");
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of h) sum += byte;
  octal(148, 7, sum, true);
  return h;
}

/** apk-tools' script type numbering, which orders a package's members in `scripts.tar`. */
const SCRIPT_TYPE_ORDER: readonly ApkScriptName[] = [
  ".pre-install",
  ".post-install",
  ".pre-deinstall",
  ".post-deinstall",
  ".pre-upgrade",
  ".post-upgrade",
  ".trigger",
];

/** A line of `triggers`: the package (by checksum) and its trigger globs. */
export interface TriggerLine {
  checksum: string;
  globs: string[];
}

export function parseTriggersDb(text: string): TriggerLine[] {
  const out: TriggerLine[] = [];
  for (const line of text.split("\n")) {
    const [checksum, ...globs] = line.split(" ").filter((w) => w !== "");
    if (checksum === undefined || !APK_CHECKSUM.test(checksum)) continue;
    out.push({ checksum, globs });
  }
  return out;
}

export function serializeTriggersDb(lines: readonly TriggerLine[]): string {
  return lines.map((l) => `${[l.checksum, ...l.globs].join(" ")}\n`).join("");
}

/** Whether the image has the `/bin/sh` apk runs packages' scripts with (a file, as the image resolves it). */
export function hasShell(root: string): boolean {
  return imageHasProgram(root, "/bin/sh");
}

/** Runs packages' scripts in the image with its own `/bin/sh`, as apk runs them. */
export class ScriptRunner {
  readonly #files: ScriptFileRunner;

  constructor(sandbox: EngineSandbox, timeoutMs?: number) {
    this.#files = new ScriptFileRunner(sandbox, {
      dir: SCRIPT_EXEC_DIR,
      dirMode: 0o755,
      manager: "apk",
      scripts: "scripts",
      env: [SCRIPT_PATH],
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
    });
  }

  /** Wall time spent in scripts. */
  get ms(): number {
    return this.#files.ms;
  }

  /**
   * Hide `path` (absolute in the root) from every script: suture keeps staged files there and
   * moves them into place between scripts, so a script that could replace them with symlinks
   * would have the host follow those links.
   */
  hide(path: string): void {
    this.#files.hide(path);
  }

  /**
   * Run one script: written to `/lib/apk/exec/<name>-<version>.<type>` (0755), executed by the
   * kernel (its `#!` line names the image's shell) with apk's arguments and PATH, then removed.
   * A failure is PATCH_FAILED naming the package, the script and what it printed last.
   */
  async run(pkg: { name: string; version: string }, type: ApkScriptName, script: Buffer, args: string[]) {
    const name = `${pkg.name}-${pkg.version}${type}`;
    const r = await this.#files.run(
      [{ name, data: script, mode: 0o755 }],
      [this.#files.pathOf(name), ...args],
    );
    if (r.exitCode !== 0) {
      const last = lastOutputLine(r);
      throw new SutureError(
        "PATCH_FAILED",
        `${pkg.name} ${pkg.version}: its ${type.slice(1)} script failed with exit code ${r.exitCode}${last ? ` (${last})` : ""}; nothing was written: fix the script's cause in the image, or use --engine sandbox to see its whole output`,
      );
    }
  }

  /** Remove `/lib/apk/exec` again when it was made for the scripts and is empty. */
  finish(): void {
    this.#files.finish();
  }
}
