import { createHash } from "node:crypto";
import { lstat, readFile, rename, rm, utimes, writeFile } from "node:fs/promises";
import { SutureError } from "../../../../../errors/errors.ts";
import { readFileInRoot, resolveInRoot, walkInRoot } from "../../../../../fs/in-root.ts";
import type { ProgressSink } from "../../../../../progress/events.ts";
import { rewriteCaSelection } from "./ca-certificates-conf.ts";
import { caConfigLoopOutcome, type PlacedConfigLoop, placeCaConfigLoop } from "./ca-certificates-config.ts";
import { LDCONFIG_BUILDS, LDCONFIG_PROGRAM, runLdconfig } from "./ld-so-cache.ts";
import { MAINTSCRIPT_HELPER } from "./maintscript-helper.ts";
import { updateCaCertificates } from "./update-ca-certificates.ts";
import { linkUsrLibSsl, type ScriptOutcome, updateMimeIfPresent } from "./whole-scripts.ts";

const CA_SELECTION = "--suture-ca-selection";

/**
 * Native equivalents of programs that maintainer scripts and triggers call, one row per package
 * and program. During `dpkg --configure` the program is replaced by a stand-in that only records
 * how it was called; afterwards, with the real program back in place, each recorded call is done
 * natively, or by running the real program when the native equivalent says it cannot reproduce
 * that call exactly. A row applies only to the program texts it was written and tested against
 * (SHA-256 of the file): any other version of the script runs for real, as without this table.
 *
 * Why stand-ins rather than replacing whole maintainer scripts: the scripts around these programs
 * also talk to debconf (ca-certificates' postinst rewrites its selection from debconf answers), whose
 * database suture does not write; the programs are where the time goes (one fork per certificate,
 * several times over, which under QEMU is minutes).
 */
export interface NativeHook {
  /** The package that ships the program; the row applies when this package is being configured. */
  package: string;
  /**
   * The row applies whenever any package is configured (a program other packages' scripts and
   * triggers call, such as ldconfig), not only when its own package is.
   */
  anyPackage?: boolean;
  /** What the report calls it: "update-ca-certificates". */
  hook: string;
  /** The program's path in the image. */
  program: string;
  /**
   * The calls recorded, as a shell `case` pattern over `"$*"`; any other call runs the real
   * program at once (one whose output or effect the script uses right away: `ldconfig -p`).
   * Without it every call is recorded.
   */
  records?: string;
  /**
   * Shell run by the stand-in before it records a call, given the real program's path: it
   * `exec`s the real program for any call it cannot show to be recordable (when the decision
   * needs the environment or the filesystem at the time of the call, which `records` cannot see).
   */
  decides?: (real: string) => string;
  /** SHA-256 of each program text this stands for, with the package versions that ship it. */
  texts: ReadonlyMap<string, string>;
  /** Do one recorded call natively; `unsupported` means: run the real program for it. */
  run(
    root: string,
    args: readonly string[],
  ): Promise<{ done: true; detail: string } | { done: false; unsupported: string }>;
  /**
   * A block of one of the package's maintainer scripts that is recorded as a call of the program
   * too (its inputs as arguments), for the texts of that script listed here. What lies between
   * `start` and `end` (both kept) is replaced by the recorder; when the native equivalent cannot
   * do the call, the block runs for real in the shell, with the script's helper functions.
   */
  scriptBlock?: {
    script: string;
    texts: ReadonlyMap<string, string>;
    start: string;
    end: string;
    /** The first argument of the recorded call. */
    marker: string;
    /** Shell expressions recorded as the call's further arguments, and the variables they set back. */
    inputs: readonly { expression: string; variable: string }[];
    /** Where the script's helper functions start and end. */
    functionsStart: string;
    functionsEnd: string;
  };
}

export const NATIVE_HOOKS: readonly NativeHook[] = [
  {
    package: "ca-certificates",
    hook: "update-ca-certificates",
    program: "/usr/sbin/update-ca-certificates",
    texts: new Map([
      [
        "395364bffc7ce85ccbe2de71215f9c6c85c024af3bbd991c75a01c2d2aa3080a",
        "20230311, 20230311+deb12u1 (bookworm)",
      ],
      [
        "2cb06c85b5f01c4f6b72c3983d9f66d44aac0a7ac997ee55e7e429aedbc3934d",
        "20250419~deb12u2 (bookworm-security)",
      ],
    ]),
    async run(root, args) {
      if (args[0] === CA_SELECTION) {
        const r = await rewriteCaSelection(root, args[1] ?? "", args[2] ?? "");
        return r.done ? { done: true, detail: `selection ${r.changed ? "rewritten" : "unchanged"}` } : r;
      }
      const r = await updateCaCertificates(root, args);
      return r.done ? { done: true, detail: `${r.added} added, ${r.removed} removed` } : r;
    },
    // The postinst's rewrite of /etc/ca-certificates.conf from the debconf answers (a loop of
    // greps and seds per line); the debconf conversation before it still runs in the image.
    scriptBlock: {
      script: "postinst",
      texts: new Map([
        [
          "bbad2df5d3c5e3d787789275830bc5b597fe6e9218a99516947a079dcae9e262",
          "20230311+deb12u1, 20250419~deb12u2 (bookworm, bookworm-security)",
        ],
      ]),
      start: "\tif test -f /etc/ca-certificates.conf; then\n",
      end: "\telse\n\t  # new file\n",
      marker: CA_SELECTION,
      inputs: [
        { expression: '"$CERTS_AVAILABLE"', variable: "CERTS_AVAILABLE" },
        { expression: '"$CERTS_ENABLED"', variable: "CERTS_ENABLED" },
      ],
      functionsStart: "each_value() {\n",
      functionsEnd: 'case "$1" in\n',
    },
  },
  // dpkg-maintscript-helper's calls that do nothing (maintscript-helper.ts).
  MAINTSCRIPT_HELPER,
  {
    // libc-bin's ldconfig: its trigger (`interest-await ldconfig`, activated by nearly every
    // library package) runs `ldconfig -r /` from libc-bin's postinst; some postinsts call it too.
    package: "libc-bin",
    anyPackage: true,
    hook: "ldconfig",
    program: LDCONFIG_PROGRAM,
    records: `''|'-r /'|'-r '`,
    texts: new Map([...LDCONFIG_BUILDS].map(([hash, build]) => [hash, build.versions])),
    async run(root, args) {
      const r = await runLdconfig(root, args);
      return r.done
        ? {
            done: true,
            detail: `${r.libraries} libraries cached, ${r.linksMade} links made, ${r.linksRemoved} removed`,
          }
        : r;
    },
  },
];

/**
 * Triggers whose whole processing is one call of a program with a native equivalent above
 * (scriptsNeedRuntime in native.ts): the interested package, the SHA-256 of its postinst texts
 * whose `triggered` branch only makes that call, and the call. A caller that processes the trigger
 * without the image's runtime checks the postinst against these texts first.
 */
export const NATIVE_TRIGGERS: ReadonlyMap<
  string,
  { package: string; postinst: ReadonlyMap<string, string>; call: readonly string[] }
> = new Map([
  [
    "ldconfig",
    {
      package: "libc-bin",
      // `if [ "$1" = "triggered" ] || …; then ldconfig -r "$DPKG_ROOT/" || ldconfig --verbose …; exit 0; fi`
      postinst: new Map([
        ["3daa7e3ffd429c1d77287f0fc840a490a607697906d2303452f70578647ce0d4", "2.36-9+deb12u14 (bookworm)"],
      ]),
      call: [LDCONFIG_PROGRAM, "-r", "/"],
    },
  ],
]);

/**
 * Whole maintainer scripts with a native equivalent, by package and script: the SHA-256 of each
 * script text the equivalent was written and proven against (test/integration/
 * dpkg-native-configure.test.ts runs the real one as the oracle), with the versions that ship it.
 * Any other text of the script runs for real. Unlike NATIVE_HOOKS these replace the script
 * outright, so they are only for scripts whose every effect is reproduced (no debconf).
 */
export interface NativeScript {
  package: string;
  script: "postinst" | "postrm";
  texts: ReadonlyMap<string, string>;
  /** Do what the script does for these arguments (`configure <old version>`). */
  run(root: string, args: readonly string[]): Promise<ScriptOutcome> | ScriptOutcome;
}

export const NATIVE_SCRIPTS: readonly NativeScript[] = [
  {
    // `if [ ! -e /usr/lib/ssl ]; then …; ln -sf /etc/ssl /usr/lib/ssl; fi`, for every `$1`.
    package: "openssl",
    script: "postinst",
    texts: new Map([
      [
        "625ae8f649ec61f00e1ab53568a84f85f964f10fdbd9f25b800cc229205d1714",
        "3.0.20-1~deb12u2, 3.0.22-1~deb12u2 (bookworm, bookworm-security)",
      ],
    ]),
    run: (root) => linkUsrLibSsl(root),
  },
  {
    // `if [ "$1" = "configure" ] && [ -x "`which update-mime 2> /dev/null`" ]; then update-mime; fi`
    package: "unzip",
    script: "postinst",
    texts: new Map([
      [
        "6ecdb1415319c81c14a94114a279186a8054c221fe6c63b8a8a2ce38b8b39966",
        "6.0-28, 6.0-28+deb12u1 (bookworm)",
      ],
    ]),
    run: (root, args) => updateMimeIfPresent(root, args, "configure"),
  },
  {
    // `if which update-mime > /dev/null 2>&1; then update-mime; fi`, for every `$1`.
    package: "unzip",
    script: "postrm",
    texts: new Map([
      [
        "27793cfe5796bf9b694e2e2ce532d62917dcad70b64b8a160947f84fd279008a",
        "6.0-28, 6.0-28+deb12u1 (bookworm)",
      ],
    ]),
    run: (root, args) => updateMimeIfPresent(root, args),
  },
];

/** A stand-in in place during `dpkg --configure`. */
interface PlacedStandIn {
  hook: NativeHook;
  /** Host paths: the program, the real program moved aside, the record of calls. */
  /** Image paths (resolved inside the root again at each use: the scripts ran in between). */
  programPath: string;
  realPath: string;
  callsPath: string;
  /** The block's own text with the script's functions, when a script block was replaced. */
  blockScript?: string;
}

/** A maintainer script overwritten in place while dpkg runs, with what restores it. */
interface RewrittenScript {
  path: string;
  text: Buffer;
  mode: number;
  atime: Date;
  mtime: Date;
}

/** How a hook's calls were done, for the progress event and the report. */
export interface HookOutcome {
  package: string;
  hook: string;
  calls: number;
  ran: "native" | "script";
  detail: string;
  elapsedMs: number;
}

export interface StandIns {
  /** Put the real programs back (idempotent); always called, whether configure worked or not. */
  restore(): Promise<void>;
  /**
   * After a successful configure: do the recorded calls, natively where the hook can, else by
   * `runReal(program, args)` in the image. Restores the programs first.
   */
  replay(runReal: (args: string[]) => Promise<void>, progress: ProgressSink): Promise<HookOutcome[]>;
}

const STAND_IN_SUFFIX = ".suture-real";
const CALLS_SUFFIX = ".suture-calls";

/**
 * Place stand-ins for the rows whose package is among `configuring` and whose program in the
 * image is a regular file with a known text. The stand-in is a POSIX shell script (the scripts
 * that call it run under /bin/sh anyway) appending its arguments, one per line after a count, to
 * a file beside the program; a call whose arguments contain a newline runs the real program.
 */
export async function placeStandIns(root: string, configuring: ReadonlySet<string>): Promise<StandIns> {
  const placed: PlacedStandIn[] = [];
  const rewritten: RewrittenScript[] = [];
  let restored = false;
  let configLoop: PlacedConfigLoop | undefined;
  const restore = async () => {
    if (restored) return;
    restored = true;
    for (const p of placed) await rename(await hostOf(root, p.realPath), await hostOf(root, p.programPath));
    for (const r of rewritten) {
      const host = await hostOf(root, r.path);
      await rm(host, { force: true });
      await writeFile(host, r.text, { mode: r.mode });
      await utimes(host, r.atime, r.mtime);
    }
  };
  try {
    for (const hook of NATIVE_HOOKS) {
      if (!(hook.anyPackage ? configuring.size > 0 : configuring.has(hook.package))) continue;
      const walk = walkInRoot(root, hook.program, { followFinal: false, mustExist: true });
      if (walk.kind !== "found" || !walk.stat.isFile()) continue;
      const text = await readFile(walk.host);
      if (!hook.texts.has(createHash("sha256").update(text).digest("hex"))) continue;
      const realHost = `${walk.host}${STAND_IN_SUFFIX}`;
      const callsHost = `${walk.host}${CALLS_SUFFIX}`;
      if (await exists(realHost)) continue; // not ours to move aside
      if (await exists(callsHost)) continue;
      const real = `${hook.program}${STAND_IN_SUFFIX}`;
      const calls = `${hook.program}${CALLS_SUFFIX}`;
      await rename(walk.host, realHost);
      placed.push({
        hook,
        programPath: walk.path,
        realPath: `${walk.path}${STAND_IN_SUFFIX}`,
        callsPath: `${walk.path}${CALLS_SUFFIX}`,
      });
      const script = [
        "#!/bin/sh",
        `# suture: records this call; suture does its effect natively after dpkg --configure.`,
        "nl='",
        "'",
        `case "$*" in *"$nl"*) exec ${real} "$@" ;; esac`,
        ...(hook.records ? [`case "$*" in ${hook.records}) ;; *) exec ${real} "$@" ;; esac`] : []),
        ...(hook.decides ? [hook.decides(real)] : []),
        `printf '%s\\n' "call $#" "$@" >> ${calls}`,
        "",
      ].join("\n");
      await writeFile(walk.host, script, { mode: walk.stat.mode & 0o7777 });
      const block = hook.scriptBlock ? await replaceScriptBlock(root, hook, calls, rewritten) : undefined;
      if (block) placed.at(-1)!.blockScript = block;
    }
    // ca-certificates' debconf config script: its certificate loop precomputed, behind a guard.
    if (configuring.has("ca-certificates")) {
      configLoop = await placeCaConfigLoop(root);
      if (configLoop) rewritten.push(configLoop.rewrite);
    }
  } catch (e) {
    // Whatever was placed goes back before the error is reported.
    await restore();
    throw e;
  }
  return {
    restore,
    async replay(runReal, progress) {
      await restore();
      const outcomes: HookOutcome[] = [];
      const loop = configLoop && (await caConfigLoopOutcome(root, configLoop));
      if (loop) {
        progress({ type: "hook", ...loop });
        outcomes.push(loop);
      }
      for (const p of placed) {
        const text = (await readFileInRoot(root, p.callsPath))?.toString("utf8") ?? "";
        await rm(await hostOf(root, p.callsPath), { force: true });
        const calls = parseCalls(text, p.hook.program);
        if (calls.length === 0) continue;
        const started = performance.now();
        let ran: HookOutcome["ran"] = "native";
        const details: string[] = [];
        for (const args of calls) {
          const r = ran === "native" ? await p.hook.run(root, args) : undefined;
          if (r?.done) {
            details.push(r.detail);
            continue;
          }
          // From the first call the native equivalent cannot do, the rest run for real, in order.
          if (r && !r.done) details.push(`ran the script: ${r.unsupported}`);
          ran = "script";
          const block = p.hook.scriptBlock;
          if (block && args[0] === block.marker) {
            if (!p.blockScript)
              throw new SutureError(
                "INTERNAL",
                `${p.hook.package}: a script block was recorded but not replaced`,
              );
            await runReal(["/bin/sh", "-c", p.blockScript, "sh", ...args.slice(1)]);
          } else await runReal([p.hook.program, ...args]);
        }
        const outcome: HookOutcome = {
          package: p.hook.package,
          hook: p.hook.hook,
          calls: calls.length,
          ran,
          detail: withRepeatsCounted(details),
          elapsedMs: Math.round(performance.now() - started),
        };
        progress({ type: "hook", ...outcome });
        outcomes.push(outcome);
      }
      return outcomes;
    },
  };
}

/**
 * Replace the hook's block of its maintainer script (as unpacked for configuring) by a line that
 * records the block's inputs as a call; returns the block as a script of its own (the script's
 * functions, `set -e`, the inputs from `$1…`, the block) to run for real if need be. Unknown
 * script texts are left alone: the block then runs in the script as always.
 */
async function replaceScriptBlock(
  root: string,
  hook: NativeHook,
  callsPath: string,
  rewritten: RewrittenScript[],
): Promise<string | undefined> {
  const block = hook.scriptBlock!;
  const walk = walkInRoot(root, `/var/lib/dpkg/info/${hook.package}.${block.script}`, {
    followFinal: false,
    mustExist: true,
  });
  if (walk.kind !== "found" || !walk.stat.isFile()) return undefined;
  const text = await readFile(walk.host);
  if (!block.texts.has(createHash("sha256").update(text).digest("hex"))) return undefined;
  const source = text.toString("utf8");
  const start = source.indexOf(block.start);
  const end = source.indexOf(block.end, start);
  const fStart = source.indexOf(block.functionsStart);
  const fEnd = source.indexOf(block.functionsEnd, fStart);
  if (start < 0 || end < 0 || fStart < 0 || fEnd < 0) return undefined;
  const body = source.slice(start + block.start.length, end);
  const record = `\t  printf '%s\\n' "call ${block.inputs.length + 1}" ${block.marker} ${block.inputs.map((i) => i.expression).join(" ")} >> ${callsPath}\n`;
  rewritten.push({
    path: walk.path,
    text,
    mode: walk.stat.mode & 0o7777,
    atime: walk.stat.atime,
    mtime: walk.stat.mtime,
  });
  await writeFile(walk.host, source.slice(0, start + block.start.length) + record + source.slice(end));
  const inputs = block.inputs.map((i, n) => `${i.variable}="$${n + 1}"\n`).join("");
  return `set -e\n${source.slice(fStart, fEnd)}${inputs}${block.start}${body}fi\n`;
}

/**
 * The host path of an image path whose last component is not followed, resolved inside the root
 * (the image's scripts ran since the path was first resolved, and may have made links of its
 * directories).
 */
async function hostOf(root: string, path: string): Promise<string> {
  const host = await resolveInRoot(root, path, { followFinal: false, mustExist: false });
  if (!host) throw new SutureError("INTERNAL", `${path} is no longer below a directory of the image`);
  return host;
}

async function exists(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined)) !== undefined;
}

/** Details joined, a run of equal ones said once with its count (`… ×16`). */
function withRepeatsCounted(details: readonly string[]): string {
  const runs: { detail: string; count: number }[] = [];
  for (const detail of details)
    if (runs.at(-1)?.detail === detail) runs.at(-1)!.count++;
    else runs.push({ detail, count: 1 });
  return runs.map((r) => (r.count > 1 ? `${r.detail} ×${r.count}` : r.detail)).join("; ");
}

/** The stand-in's record: `call N` then N argument lines, per call. */
function parseCalls(text: string, program: string): string[][] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const calls: string[][] = [];
  for (let i = 0; i < lines.length; ) {
    const m = /^call (\d+)$/.exec(lines[i]!);
    const n = m ? Number(m[1]) : Number.NaN;
    if (!Number.isInteger(n) || i + 1 + n > lines.length)
      throw new SutureError("INTERNAL", `the record of ${program}'s calls is malformed at line ${i + 1}`);
    calls.push(lines.slice(i + 1, i + 1 + n));
    i += 1 + n;
  }
  return calls;
}
