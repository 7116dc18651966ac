import { createHash } from "node:crypto";
import { lstat, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { readFileInRoot, resolveInRoot, walkInRoot } from "../../../../../fs/in-root.ts";
import type { HookOutcome } from "./stand-ins.ts";

/**
 * ca-certificates' debconf `config` script (bookworm, bookworm-security), with its loop over the
 * certificates precomputed. The loop (`for crt in $crts`) runs two `grep` subshells per
 * certificate (about 150) to sort each into CERTS_AVAILABLE / CERTS_ENABLED / CERTS_NEW: seconds
 * on a loaded machine, minutes under QEMU. Its result is a pure function of its inputs: the
 * sorted certificate list `$crts`, `$CERTS_DISABLED`, `$CERTS_TRUST` (both read from
 * /etc/ca-certificates.conf) and `$trust_new` (a debconf answer). suture computes those inputs
 * from the unpacked tree as the script would, and the outcome for each value of `$trust_new`;
 * the loop is replaced by a guard that compares the inputs the script really computed (with
 * shell builtins only) against the precomputed ones and assigns the precomputed outcome when they
 * match, else runs the original loop unchanged. So a wrong guess costs time, never a result.
 */

/** SHA-256 of the config texts this stands for, with the package versions that ship them. */
export const CA_CONFIG_TEXTS: ReadonlyMap<string, string> = new Map([
  ["99c9d296c5a65cf91c80795a1e3eef323624b290ed6821987f1a058cf8834484", "20230311+deb12u1 (bookworm)"],
  [
    "6d34a25b8f7e6ff679a768db581ae5e436faee193aece201c6a4501e36b2ec37",
    "20250419~deb12u2 (bookworm-security)",
  ],
]);

const LOOP_START = "  for crt in $crts\n";
const LOOP_END = "  done\nelse\n  # initial installation\n";
/** The pipeline that computes `$crts`, which stays in the script ahead of the guard. */
const CRTS_PIPELINE = `  cd /usr/share/ca-certificates
  crts=$( (find . -type f -name '*.crt' -print | sed -e 's/^\\.\\///'; \\
           echo "$CERTS_LIST" | tr ',' '\\n' | sed -e 's/^[[:space:]]*//') | \\
           sort | uniq)
`;

const SLASH = Buffer.from("/");
const CRT = Buffer.from(".crt");

/** What the guard records (one line per run) so the outcome can be reported. */
export type ConfigLoopOutcome = "precomputed" | "script";

/**
 * The config script `text` (one of CA_CONFIG_TEXTS) with its certificate loop replaced by the
 * guarded precomputation over the tree at `root`, each run appending its outcome to `recordPath`
 * (an image path); or why the loop is kept as it is.
 */
export async function precomputeCaConfigLoop(
  root: string,
  text: string,
  recordPath: string,
): Promise<{ text: string } | { kept: string }> {
  const start = text.indexOf(LOOP_START);
  const end = text.indexOf(LOOP_END, start);
  const pipeline = text.indexOf(CRTS_PIPELINE);
  const list = /^CERTS_LIST="([^"\\$`]*)"$/m.exec(text)?.[1];
  if (start < 0 || end < 0 || pipeline < 0 || pipeline + CRTS_PIPELINE.length !== start || list === undefined)
    return { kept: "the script is not laid out as expected" };
  if (/['\n]/.test(recordPath)) return { kept: "the record path cannot be quoted" };

  const inputs = await loopInputs(root, list);
  if ("kept" in inputs) return inputs;
  const { crts, disabled, trust } = inputs;
  const outcome = (trustNew: "yes" | "ask" | "other") => {
    const enabled: string[] = [];
    const fresh: string[] = [];
    for (const crt of crts) {
      if (disabled.has(crt)) continue;
      if (trust.has(crt) || trustNew === "yes") enabled.push(crt);
      else if (trustNew === "ask") fresh.push(crt);
    }
    return `CERTS_ENABLED=${quote(enabled.join(", "))}\n      CERTS_NEW=${quote(fresh.join(", "))}`;
  };
  const loop = text.slice(start, end + "  done\n".length);
  const record = (what: ConfigLoopOutcome) => `printf '%s\\n' ${what} >> ${quote(recordPath)}`;
  // `test` and `printf` are dash builtins: the guard forks nothing. IFS is compared too, since the
  // loop's word splitting depends on it.
  const guard = `  if test "$IFS" = ' \t\n' && test "$crts" = ${quote(crts.join("\n"))} &&
     test "$CERTS_DISABLED" = ${quote(inputs.disabledText)} &&
     test "$CERTS_TRUST" = ${quote(inputs.trustText)} &&
     test "$CERTS_AVAILABLE$CERTS_ENABLED$CERTS_NEW" = ""; then
    # suture: the loop below, precomputed for these inputs.
    CERTS_AVAILABLE=${quote(crts.join(", "))}
    case "$trust_new" in
    yes)
      ${outcome("yes")}
      ;;
    ask)
      ${outcome("ask")}
      ;;
    *)
      ${outcome("other")}
      ;;
    esac
    ${record("precomputed")}
  else
    ${record("script")}
${loop}  fi
`;
  return { text: text.slice(0, start) + guard + text.slice(end + "  done\n".length) };
}

/** Single-quoted for the shell: `'` becomes `'\''`. */
function quote(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

interface LoopInputs {
  /** `$crts` as the script computes it (sorted, unique), one name per entry. */
  crts: string[];
  disabled: ReadonlySet<string>;
  trust: ReadonlySet<string>;
  /** `$CERTS_DISABLED` and `$CERTS_TRUST` as the script's command substitutions leave them. */
  disabledText: string;
  trustText: string;
}

/**
 * The loop's inputs as the script computes them from the tree: `find` under
 * /usr/share/ca-certificates plus CERTS_LIST, sorted in byte order (the C locale dpkg's scripts
 * usually run in; another order only fails the guard); the two `sed`s over the selection file.
 * Anything the shell would treat specially (word splitting, globbing, `echo`'s backslashes and
 * options, `grep`'s options) keeps the loop: its semantics are then not this simple function.
 */
async function loopInputs(root: string, list: string): Promise<LoopInputs | { kept: string }> {
  const dir = await resolveInRoot(root, "/usr/share/ca-certificates");
  if (!dir || !(await lstat(dir)).isDirectory()) return { kept: "no /usr/share/ca-certificates" };
  const names: Buffer[] = [];
  // By bytes: names are image data and need not be UTF-8 (such a name keeps the loop, below).
  const walk = async (host: Buffer, rel: Buffer) => {
    for (const name of await readdir(host, { encoding: "buffer" })) {
      const path = Buffer.concat([host, SLASH, name]);
      const st = await lstat(path);
      const relPath = rel.length ? Buffer.concat([rel, SLASH, name]) : name;
      if (st.isDirectory()) await walk(path, relPath);
      else if (st.isFile() && name.length >= 4 && name.subarray(-4).equals(CRT)) names.push(relPath);
    }
  };
  await walk(Buffer.from(dir), Buffer.alloc(0));
  for (const entry of list.split(",")) names.push(Buffer.from(entry.replace(/^[ \t\n\v\f\r]+/, "")));
  names.sort(Buffer.compare);
  const crts: string[] = [];
  for (const name of names) {
    const text = name.toString("utf8");
    if (!Buffer.from(text).equals(name)) return { kept: "a certificate name is not UTF-8" };
    if (crts.at(-1) === text) continue;
    // Word splitting, globbing, backslashes, and a leading `-` (an option to grep).
    if (text === "" || /[\s*?[\]\\\0-\x1f\x7f]/.test(text) || text.startsWith("-"))
      return { kept: `the certificate name ${JSON.stringify(text.slice(0, 80))}` };
    crts.push(text);
  }

  const confBytes = (await readFileInRoot(root, "/etc/ca-certificates.conf")) ?? Buffer.alloc(0);
  const conf = confBytes.toString("utf8");
  if (!Buffer.from(conf).equals(confBytes)) return { kept: "ca-certificates.conf is not UTF-8" };
  if (/[\\\0]/.test(conf)) return { kept: "a backslash or NUL in ca-certificates.conf" };
  const lines = conf.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const disabledLines = lines.filter((l) => l.startsWith("!")).map((l) => l.slice(1));
  const trustLines = lines.filter((l) => !l.startsWith("#") && !l.startsWith("!"));
  // `$(…)` drops the trailing newlines.
  const substituted = (ls: string[]) => ls.join("\n").replace(/\n+$/, "");
  const disabledText = substituted(disabledLines);
  const trustText = substituted(trustLines);
  // `echo "$X"` would take a leading `-n` (or `-e`…) as an option.
  if (disabledText.startsWith("-") || trustText.startsWith("-"))
    return { kept: "a selection line that echo would take as an option" };
  // `grep -F -x "$crt"` over `echo "$X"`: a line equal to the name.
  return {
    crts,
    disabled: new Set(disabledText.split("\n")),
    trust: new Set(trustText.split("\n")),
    disabledText,
    trustText,
  };
}

const CONFIG_SCRIPT = "/var/lib/dpkg/info/ca-certificates.config";
/** Beside the database, not in info/ (whose `<package>.*` names dpkg reads as control files). */
const RECORD = "/var/lib/dpkg/ca-certificates.config.suture-outcome";

/** A maintainer script overwritten while dpkg runs, with what restores it (stand-ins.ts). */
export interface ScriptRewrite {
  path: string;
  text: Buffer;
  mode: number;
  atime: Date;
  mtime: Date;
}

/** The precomputation placed for one `dpkg --configure`. */
export interface PlacedConfigLoop {
  /** What restores the original script. */
  rewrite: ScriptRewrite;
  /** The image path of the guard's record. */
  recordPath: string;
  precomputeMs: number;
}

/**
 * Replace the loop of ca-certificates' config script as unpacked for configuring (a text of
 * CA_CONFIG_TEXTS, a regular file) by the guarded precomputation; undefined when the script is
 * another text or the inputs are not ones this reproduces (the script then runs unchanged).
 */
export async function placeCaConfigLoop(root: string): Promise<PlacedConfigLoop | undefined> {
  const started = performance.now();
  const walk = walkInRoot(root, CONFIG_SCRIPT, { followFinal: false, mustExist: true });
  if (walk.kind !== "found" || !walk.stat.isFile()) return undefined;
  const text = await readFile(walk.host);
  if (!CA_CONFIG_TEXTS.has(createHash("sha256").update(text).digest("hex"))) return undefined;
  const record = walkInRoot(root, RECORD, { followFinal: false, mustExist: false });
  if (record.kind !== "missing" || record.missing.length !== 1) return undefined; // not ours to write
  const r = await precomputeCaConfigLoop(root, text.toString("utf8"), RECORD);
  if ("kept" in r) return undefined;
  const rewrite = {
    path: walk.path,
    text,
    mode: walk.stat.mode & 0o7777,
    atime: walk.stat.atime,
    mtime: walk.stat.mtime,
  };
  await writeFile(walk.host, r.text);
  return { rewrite, recordPath: RECORD, precomputeMs: performance.now() - started };
}

/**
 * After dpkg ran (the script restored): what the guard recorded, as a hook outcome (removing the
 * record); undefined when the script did not run.
 */
export async function caConfigLoopOutcome(
  root: string,
  placed: PlacedConfigLoop,
): Promise<HookOutcome | undefined> {
  const text = (await readFileInRoot(root, placed.recordPath))?.toString("utf8") ?? "";
  const host = await resolveInRoot(root, placed.recordPath, { followFinal: false, mustExist: false });
  if (host) await rm(host, { force: true });
  const runs = text.split("\n").filter((l) => l !== "");
  if (runs.length === 0) return undefined;
  const precomputed = runs.filter((r) => r === "precomputed").length;
  return {
    package: "ca-certificates",
    hook: "config certificate loop",
    calls: runs.length,
    ran: precomputed === runs.length ? "native" : "script",
    detail:
      precomputed === runs.length
        ? "precomputed"
        : `the inputs differed from the precomputed ones in ${runs.length - precomputed} of ${runs.length} runs; the loop ran`,
    elapsedMs: Math.round(placed.precomputeMs),
  };
}
