import {
  closeSync,
  fchmodSync,
  constants as fsConstants,
  mkdirSync,
  openSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { quoteUntrusted, SutureError } from "../../../errors/errors.ts";
import { childPath, walkInRoot } from "../../../fs/in-root.ts";
import type { EngineSandbox } from "../engine.ts";

/**
 * Running a package's script the way package managers do: its body written as a file into a
 * directory of the image (apk's `/lib/apk/exec`, rpm's `/var/tmp`), executed in the image through
 * `sandbox.run` (runc, never on the host), and removed again. What each package manager names the
 * file, which interpreter and arguments it passes, and what a failure means stay with its engine.
 */

const CREATE_NOFOLLOW =
  fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/** Whether `path` (absolute) is a regular file in the image, as the image resolves it. */
export function imageHasProgram(root: string, path: string): boolean {
  if (!path.startsWith("/")) return false;
  const walk = walkInRoot(root, path, { followFinal: true });
  return walk.kind === "found" && walk.stat.isFile();
}

/** Where a package manager writes the scripts it runs, and what it runs them with. */
export interface ScriptFilesConfig {
  /** The directory, absolute in the image. */
  dir: string;
  /** Its mode where the image has none and it is made for the scripts (removed again when empty). */
  dirMode: number;
  /** The package manager, for messages: `apk`, `rpm`. */
  manager: string;
  /** What it calls them, for messages: `scripts`, `scriptlets`. */
  scripts: string;
  /** The environment every script gets (`PATH=…`). */
  env: readonly string[];
  /** Limit of one script's run. */
  timeoutMs?: number;
}

/** A file a script run needs in the script directory: its body, a list it reads… */
export interface ScriptFile {
  /** A single path component; checked. */
  name: string;
  data: string | Buffer;
  mode: number;
}

/**
 * Writes scripts into the image's script directory and runs them. Paths suture stages files in
 * are hidden from every script (empty read-only mounts over them): a script that replaced them
 * with symlinks would have the host follow those links when suture moves the files into place.
 */
export class ScriptFileRunner {
  readonly #sandbox: EngineSandbox;
  readonly #root: string;
  readonly #config: ScriptFilesConfig;
  readonly #hidden: string[] = [];
  #createdDir = false;
  /** Wall time spent in scripts. */
  ms = 0;

  constructor(sandbox: EngineSandbox, config: ScriptFilesConfig) {
    this.#sandbox = sandbox;
    this.#root = sandbox.mergedDir;
    this.#config = config;
  }

  /** Hide `path` (absolute in the root) from every script run from now on. */
  hide(path: string): void {
    this.#hidden.push(path);
  }

  /** Stop hiding `path` (it is gone: a mount point there would be created in the image). */
  unhide(path: string): void {
    const i = this.#hidden.indexOf(path);
    if (i >= 0) this.#hidden.splice(i, 1);
  }

  /** Where `name` is in the image once written (for the command line). */
  pathOf(name: string): string {
    return `${this.#config.dir}/${name}`;
  }

  /**
   * Write `files` into the script directory, run `argv` in the image, and remove the files
   * again, whatever the script did to the directory meanwhile.
   */
  async run(
    files: readonly ScriptFile[],
    argv: readonly string[],
  ): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const written: string[] = [];
    const label = `${this.#config.manager} script file name`;
    const started = performance.now();
    try {
      for (const f of files) {
        const file = childPath(this.#dir(), f.name, label);
        // Never through whatever the image has at that name: a symlink there would be followed on
        // the host.
        rmSync(file, { force: true, recursive: true });
        const fd = openSync(file, CREATE_NOFOLLOW, 0o700);
        written.push(f.name);
        try {
          writeFileSync(fd, f.data);
          fchmodSync(fd, f.mode);
        } finally {
          closeSync(fd);
        }
      }
      return await this.#sandbox.run([...argv], {
        env: [...this.#config.env],
        mounts: this.#hidden.map((destination) => ({
          destination,
          source: "tmpfs",
          type: "tmpfs",
          options: ["ro", "nosuid", "nodev", "noexec", "size=4k"],
        })),
        ...(this.#config.timeoutMs === undefined ? {} : { timeoutMs: this.#config.timeoutMs }),
      });
    } finally {
      this.ms += performance.now() - started;
      // Resolved again: the script may have replaced the directory (or one above) with a symlink.
      const dir = walkInRoot(this.#root, this.#config.dir, { followFinal: true });
      if (dir.kind === "found" && dir.stat.isDirectory())
        for (const name of written) rmSync(childPath(dir.host, name, label), { force: true });
    }
  }

  /** Remove the script directory again when it was made for the scripts and is empty. */
  finish(): void {
    if (!this.#createdDir) return;
    const walk = walkInRoot(this.#root, this.#config.dir, { followFinal: false });
    if (walk.kind !== "found" || !walk.stat.isDirectory()) return;
    try {
      rmdirSync(walk.host);
    } catch {
      // Something a script left there: keep it, as the package manager would.
    }
  }

  #dir(): string {
    const { dir, dirMode, manager, scripts } = this.#config;
    const walk = walkInRoot(this.#root, dir, { followFinal: true });
    if (walk.kind === "found" && walk.stat.isDirectory()) return walk.host;
    if (walk.kind !== "missing")
      throw new SutureError(
        "PATCH_FAILED",
        `${walk.path} is not a directory in the image, but ${manager} runs package ${scripts} from ${dir}: remove it from the image`,
      );
    const created = walkInRoot(this.#root, dir, { followFinal: true, create: "parents" });
    mkdirSync(created.host, { mode: 0o700 });
    // Not left to the umask: /var/tmp is sticky and world-writable wherever a system makes it.
    // Through a descriptor that cannot follow a symlink: never chmod(2) a path in the image.
    const fd = openSync(
      created.host,
      fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW,
    );
    try {
      fchmodSync(fd, dirMode);
    } finally {
      closeSync(fd);
    }
    this.#createdDir = true;
    return created.host;
  }
}

/** The last line a script printed (standard error first), quoted for a one-line message; "" when none. */
export function lastOutputLine(r: { stdout: string; stderr: string }): string {
  const last = `${r.stderr}\n${r.stdout}`.trim().split("\n").at(-1) ?? "";
  return last ? quoteUntrusted(last, 160) : "";
}
