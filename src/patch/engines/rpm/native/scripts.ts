import { randomBytes } from "node:crypto";
import type { RpmHeader } from "../../../../distro/rpm/header.ts";
import {
  type RpmScriptlet,
  type RpmScriptletKind,
  rpmHeaderScriptlets,
} from "../../../../distro/rpm/header-contents.ts";
import { SutureError } from "../../../../errors/errors.ts";
import type { EngineSandbox } from "../../engine.ts";
import { lastOutputLine, type ScriptFile, ScriptFileRunner } from "../../shared/script-files.ts";

/**
 * rpm's scriptlets and triggers as a package header carries them, and running them the way rpm's
 * lib/rpmscript.cc does: the body written to a temporary file under `/var/tmp` (rpm's
 * `%_tmppath`), executed as `INTERPRETER… FILE ARG1 [ARG2]` with rpm's PATH from `/`; a program
 * scriptlet without a body (`%post -p /sbin/ldconfig`) executed as recorded, without arguments;
 * file triggers get their matching paths on standard input, one a line. Everything runs in the
 * image through `sandbox.run` (runc), never on the host.
 *
 * What cannot run outside rpm is refused by the caller with `--engine sandbox` named: `<lua>`
 * scriptlets (rpm's embedded interpreter), and bodies rpm expands at install time (macro or
 * queryformat expansion flags).
 */

/** rpm's default `%_install_script_path`. */
const SCRIPT_PATH = "PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/X11R6/bin";
/** Where rpm writes a scriptlet to run it (`%_tmppath`). */
export const SCRIPT_TMP_DIR = "/var/tmp";

/** RPMSCRIPT_FLAG_* (lib/rpmscript.hh). */
export const RpmScriptFlag = { EXPAND: 1 << 0, QFORMAT: 1 << 1, CRITICAL: 1 << 2 } as const;

/** RPMSENSE_TRIGGER* bits of a trigger's flags (include/rpm/rpmds.h). */
export const RpmTriggerSense = {
  IN: 1 << 16,
  UN: 1 << 17,
  POSTUN: 1 << 18,
  PREIN: 1 << 25,
} as const;

/** Trigger tags rpm's header.ts does not name (include/rpm/rpmtag.h). */
const TriggerTag = {
  TRIGGERSCRIPTS: 1065,
  TRIGGERNAME: 1066,
  TRIGGERVERSION: 1067,
  TRIGGERFLAGS: 1068,
  TRIGGERINDEX: 1069,
  TRIGGERSCRIPTPROG: 1092,
  TRIGGERSCRIPTFLAGS: 5027,
  FILETRIGGERSCRIPTS: 5066,
  FILETRIGGERSCRIPTPROG: 5067,
  FILETRIGGERSCRIPTFLAGS: 5068,
  FILETRIGGERNAME: 5069,
  FILETRIGGERINDEX: 5070,
  FILETRIGGERFLAGS: 5072,
  TRANSFILETRIGGERSCRIPTS: 5076,
  TRANSFILETRIGGERSCRIPTPROG: 5077,
  TRANSFILETRIGGERSCRIPTFLAGS: 5078,
  TRANSFILETRIGGERNAME: 5079,
  TRANSFILETRIGGERINDEX: 5080,
  TRANSFILETRIGGERFLAGS: 5082,
  FILETRIGGERPRIORITIES: 5084,
  TRANSFILETRIGGERPRIORITIES: 5085,
} as const;

/** rpm's RPMTRIGGER_DEFAULT_PRIORITY: file triggers at or above it run before %post, the rest after. */
export const DEFAULT_TRIGGER_PRIORITY = 1_000_000;

/** A script to run: a scriptlet, or a trigger's script. */
export interface RpmScript {
  /** `%post`, `%triggerin`, `%transfiletriggerin`…: for messages. */
  label: string;
  body?: string;
  /** Interpreter and its arguments as recorded (`/bin/sh` when none is). */
  interpreter: string[];
  flags: number;
}

/** One `%trigger*` of a package: fired by a package named `name` whose version matches. */
export interface RpmTrigger {
  name: string;
  /** RPMSENSE bits: which trigger (IN, UN, POSTUN, PREIN) and the version comparison. */
  flags: number;
  version: string;
  script: RpmScript;
  /** The trigger's number in its package: each fires at most once per source package. */
  index: number;
}

/** One `%filetrigger*` or `%transfiletrigger*`: fired by files below `prefix`. */
export interface RpmFileTrigger {
  prefix: string;
  flags: number;
  priority: number;
  script: RpmScript;
  index: number;
}

export function scriptletOf(header: RpmHeader, kind: RpmScriptletKind): RpmScript | undefined {
  const s: RpmScriptlet | undefined = rpmHeaderScriptlets(header).find((x) => x.kind === kind);
  if (!s) return undefined;
  return {
    label: `%${kind}`,
    ...(s.body === undefined ? {} : { body: s.body }),
    interpreter: s.interpreter,
    flags: s.flags,
  };
}

function triggerScripts(
  header: RpmHeader,
  tags: { scripts: number; progs: number; flags: number },
  label: (flags: number) => string,
  count: number,
): ((flags: number) => RpmScript)[] {
  const bodies = header.stringArray(tags.scripts);
  const progs = header.stringArray(tags.progs);
  const flags = header.numberArray(tags.flags);
  const out: ((flags: number) => RpmScript)[] = [];
  for (let i = 0; i < count; i++) {
    const body = bodies[i];
    const prog = progs[i];
    out.push((sense) => ({
      label: label(sense),
      // rpm stores an empty body for a program-only trigger (`-p /sbin/ldconfig`).
      ...(body === undefined || body === "" ? {} : { body }),
      interpreter: prog ? [prog] : ["/bin/sh"],
      flags: flags[i] ?? 0,
    }));
  }
  return out;
}

function senseName(flags: number): string {
  if (flags & RpmTriggerSense.PREIN) return "prein";
  if (flags & RpmTriggerSense.IN) return "in";
  if (flags & RpmTriggerSense.UN) return "un";
  if (flags & RpmTriggerSense.POSTUN) return "postun";
  return "?";
}

function damaged(what: string, detail: string): SutureError {
  return new SutureError(
    "INVALID_ARCHIVE",
    `the rpm header of ${what} is inconsistent: ${detail}; the package header is damaged or hostile; use an intact package or rebuild the rpm database`,
  );
}

/** A header's `%triggerprein/in/un/postun` entries (TRIGGERNAME… and the scripts TRIGGERINDEX names). */
export function rpmHeaderTriggers(header: RpmHeader, what: string): RpmTrigger[] {
  const names = header.stringArray(TriggerTag.TRIGGERNAME);
  if (names.length === 0) return [];
  const flags = header.numberArray(TriggerTag.TRIGGERFLAGS);
  const versions = header.stringArray(TriggerTag.TRIGGERVERSION);
  const index = header.numberArray(TriggerTag.TRIGGERINDEX);
  if (flags.length !== names.length || index.length !== names.length)
    throw damaged(what, `${names.length} TRIGGERNAME but ${flags.length} flags and ${index.length} indexes`);
  const count = header.stringArray(TriggerTag.TRIGGERSCRIPTS).length;
  const scripts = triggerScripts(
    header,
    {
      scripts: TriggerTag.TRIGGERSCRIPTS,
      progs: TriggerTag.TRIGGERSCRIPTPROG,
      flags: TriggerTag.TRIGGERSCRIPTFLAGS,
    },
    (f) => `%trigger${senseName(f)}`,
    count,
  );
  return names.map((name, i) => {
    const ix = index[i]!;
    const script = scripts[ix];
    if (!script) throw damaged(what, `trigger ${i} names script ${ix} of ${count}`);
    return { name, flags: flags[i]!, version: versions[i] ?? "", script: script(flags[i]!), index: ix };
  });
}

/** A header's file triggers (`trans`: the `%transfiletrigger*` ones), with their priorities. */
export function rpmHeaderFileTriggers(header: RpmHeader, trans: boolean, what: string): RpmFileTrigger[] {
  const t = trans
    ? {
        name: TriggerTag.TRANSFILETRIGGERNAME,
        flags: TriggerTag.TRANSFILETRIGGERFLAGS,
        index: TriggerTag.TRANSFILETRIGGERINDEX,
        scripts: TriggerTag.TRANSFILETRIGGERSCRIPTS,
        progs: TriggerTag.TRANSFILETRIGGERSCRIPTPROG,
        scriptFlags: TriggerTag.TRANSFILETRIGGERSCRIPTFLAGS,
        priorities: TriggerTag.TRANSFILETRIGGERPRIORITIES,
      }
    : {
        name: TriggerTag.FILETRIGGERNAME,
        flags: TriggerTag.FILETRIGGERFLAGS,
        index: TriggerTag.FILETRIGGERINDEX,
        scripts: TriggerTag.FILETRIGGERSCRIPTS,
        progs: TriggerTag.FILETRIGGERSCRIPTPROG,
        scriptFlags: TriggerTag.FILETRIGGERSCRIPTFLAGS,
        priorities: TriggerTag.FILETRIGGERPRIORITIES,
      };
  const prefixes = header.stringArray(t.name);
  if (prefixes.length === 0) return [];
  const flags = header.numberArray(t.flags);
  const index = header.numberArray(t.index);
  if (flags.length !== prefixes.length || index.length !== prefixes.length)
    throw damaged(
      what,
      `${prefixes.length} file trigger names but ${flags.length} flags and ${index.length} indexes`,
    );
  const count = header.stringArray(t.scripts).length;
  const priorities = header.numberArray(t.priorities);
  const scripts = triggerScripts(
    header,
    { scripts: t.scripts, progs: t.progs, flags: t.scriptFlags },
    (f) => `%${trans ? "trans" : ""}filetrigger${senseName(f)}`,
    count,
  );
  return prefixes.map((prefix, i) => {
    const ix = index[i]!;
    const script = scripts[ix];
    if (!script) throw damaged(what, `file trigger ${i} names script ${ix} of ${count}`);
    return {
      prefix,
      flags: flags[i]!,
      priority: priorities[ix] ?? DEFAULT_TRIGGER_PRIORITY,
      script: script(flags[i]!),
      index: ix,
    };
  });
}

/** What running a script takes. */
export type ScriptNeed =
  /** Only rpm can run it: `<lua>`, or a body rpm expands at install time. */
  | { kind: "rpm-only"; why: string }
  /** `/sbin/ldconfig` and nothing else (as a program, or a body of only that command). */
  | { kind: "ldconfig"; program: string }
  /** A program with no body (runs without a shell). */
  | { kind: "program"; program: string }
  /** A body for an interpreter (the image's shell, mostly). */
  | { kind: "interpreter"; program: string };

const LDCONFIG_BODY = /^\s*(?:(?:\/usr)?\/sbin\/)?ldconfig\s*$/;

export function scriptNeed(script: RpmScript): ScriptNeed {
  const program = script.interpreter[0] ?? "/bin/sh";
  if (program === "<lua>") return { kind: "rpm-only", why: "is written in rpm's embedded Lua" };
  if (script.flags & (RpmScriptFlag.EXPAND | RpmScriptFlag.QFORMAT))
    return { kind: "rpm-only", why: "has a body rpm expands with its macros when it runs it" };
  if (script.body === undefined)
    return /\/ldconfig$/.test(program) && script.interpreter.length === 1
      ? { kind: "ldconfig", program }
      : { kind: "program", program };
  if (/^\/(?:usr\/)?bin\/(?:ba)?sh$/.test(program) && LDCONFIG_BODY.test(script.body))
    return { kind: "ldconfig", program: "/sbin/ldconfig" };
  return { kind: "interpreter", program };
}

export interface ScriptOutcome {
  exitCode: number;
  /** The last line it printed, for messages. */
  last: string;
}

/**
 * Runs scripts in the image through `sandbox.run`, with staging paths hidden from them
 * (`ScriptFileRunner`).
 */
export class RpmScriptRunner {
  readonly #files: ScriptFileRunner;

  constructor(sandbox: EngineSandbox, timeoutMs?: number) {
    this.#files = new ScriptFileRunner(sandbox, {
      dir: SCRIPT_TMP_DIR,
      dirMode: 0o1777,
      manager: "rpm",
      scripts: "scriptlets",
      env: [SCRIPT_PATH],
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
    });
  }

  /** Wall time spent in scripts. */
  get ms(): number {
    return this.#files.ms;
  }

  hide(path: string): void {
    this.#files.hide(path);
  }

  /** Stop hiding `path` (it is gone: a mount point there would be created in the image). */
  unhide(path: string): void {
    this.#files.unhide(path);
  }

  /**
   * Run `script` with `args` (appended after the body's file, as rpm appends them; none for a
   * program without a body) and, for file triggers, `stdin` lines.
   */
  async run(script: RpmScript, args: readonly number[], stdin?: readonly string[]): Promise<ScriptOutcome> {
    const files: ScriptFile[] = [];
    // rpm's own naming (rpmMkTempFile): `rpm-tmp.` and random characters.
    const file = (data: string) => {
      const name = `rpm-tmp.${randomBytes(6).toString("hex")}`;
      files.push({ name, data, mode: 0o700 });
      return this.#files.pathOf(name);
    };
    let argv =
      script.body === undefined
        ? [...script.interpreter]
        : [...script.interpreter, file(script.body), ...args.map(String)];
    if (stdin !== undefined) {
      // sandbox.run has no standard input: the image's shell redirects it from a file.
      const list = file(stdin.map((l) => `${l}\n`).join(""));
      argv = ["/bin/sh", "-c", 'exec "$@" < "$0"', list, ...argv];
    }
    const r = await this.#files.run(files, argv);
    return { exitCode: r.exitCode, last: lastOutputLine(r) };
  }

  /** Remove `/var/tmp` again when it was made for the scripts and is empty. */
  finish(): void {
    this.#files.finish();
  }
}
