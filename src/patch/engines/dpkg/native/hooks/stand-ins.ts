import { createHash } from "node:crypto";
import { lstat, readFile, rename, rm, writeFile } from "node:fs/promises";
import { SutureError } from "../../../../../errors/errors.ts";
import { walkInRoot } from "../../../../../fs/in-root.ts";
import type { ProgressSink } from "../../../../../progress/events.ts";
import { updateCaCertificates } from "./update-ca-certificates.ts";

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
  /** What the report calls it: "update-ca-certificates". */
  hook: string;
  /** The program's path in the image. */
  program: string;
  /** SHA-256 of each program text this stands for, with the package versions that ship it. */
  texts: ReadonlyMap<string, string>;
  /** Do one recorded call natively; `unsupported` means: run the real program for it. */
  run(
    root: string,
    args: readonly string[],
  ): Promise<{ done: true; detail: string } | { done: false; unsupported: string }>;
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
      const r = await updateCaCertificates(root, args);
      return r.done ? { done: true, detail: `${r.added} added, ${r.removed} removed` } : r;
    },
  },
];

/** A stand-in in place during `dpkg --configure`. */
interface PlacedStandIn {
  hook: NativeHook;
  /** Host paths: the program, the real program moved aside, the record of calls. */
  programHost: string;
  realHost: string;
  callsHost: string;
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
  for (const hook of NATIVE_HOOKS) {
    if (!configuring.has(hook.package)) continue;
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
    placed.push({ hook, programHost: walk.host, realHost, callsHost });
    const script = [
      "#!/bin/sh",
      `# suture: records this call; suture does its effect natively after dpkg --configure.`,
      "nl='",
      "'",
      `case "$*" in *"$nl"*) exec ${real} "$@" ;; esac`,
      `printf '%s\\n' "call $#" "$@" >> ${calls}`,
      "",
    ].join("\n");
    await writeFile(walk.host, script, { mode: walk.stat.mode & 0o7777 });
  }
  let restored = false;
  const restore = async () => {
    if (restored) return;
    restored = true;
    for (const p of placed) await rename(p.realHost, p.programHost);
  };
  return {
    restore,
    async replay(runReal, progress) {
      await restore();
      const outcomes: HookOutcome[] = [];
      for (const p of placed) {
        const text = await readFile(p.callsHost, "utf8").catch(() => "");
        await rm(p.callsHost, { force: true });
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
          await runReal([p.hook.program, ...args]);
        }
        const outcome: HookOutcome = {
          package: p.hook.package,
          hook: p.hook.hook,
          calls: calls.length,
          ran,
          detail: details.join("; "),
          elapsedMs: Math.round(performance.now() - started),
        };
        progress({ type: "hook", ...outcome });
        outcomes.push(outcome);
      }
      return outcomes;
    },
  };
}

async function exists(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined)) !== undefined;
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
