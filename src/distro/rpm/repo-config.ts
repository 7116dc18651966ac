import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { listDirInRoot, readFileInRoot } from "../../fs/in-root.ts";
import { type Keyring, mergeKeyrings, parseKeyring } from "../../trust/keyring.ts";
import { mirroredUrl } from "../mirrors.ts";

/**
 * The image's rpm-md repositories as its own package manager reads them: dnf/yum
 * (`/etc/dnf/dnf.conf` or `/etc/yum.conf`, `*.repo` under `/etc/yum.repos.d`, variables from
 * `/etc/dnf/vars`), tdnf (`/etc/tdnf/tdnf.conf`, its `repodir`, `/etc/tdnf/vars`…) and zypper
 * (`/etc/zypp/zypp.conf`, `/etc/zypp/repos.d`, `/etc/zypp/vars.d`). Every file is read through the
 * in-root resolver, so the image's symlinks never lead outside it.
 */

export type RpmRepoTool = "dnf" | "yum" | "tdnf" | "zypper";

export interface RpmRepo {
  /** The section name (`[baseos]`). */
  id: string;
  name?: string;
  /** Where it is defined, for messages: `/etc/yum.repos.d/ubi.repo:3`. */
  origin: string;
  enabled: boolean;
  /** `baseurl` values, variables expanded, as the image lists them. */
  baseurls: string[];
  /** `baseurls` with `--mirror` applied: where to fetch from. */
  fetchUrls: string[];
  /** Recorded only: resolving them needs a network lookup before any repository URL is known. */
  mirrorlist?: string;
  metalink?: string;
  /** Packages' signatures are checked (dnf/yum/tdnf `gpgcheck`; zypper `pkg_gpgcheck`, see below). */
  gpgcheck: boolean;
  /** repomd.xml's signature (`repomd.xml.asc`) is checked. */
  repoGpgcheck: boolean;
  /**
   * `gpgkey=` URLs, expanded. `file://` ones name files in the image (read by `repoKeyring`);
   * others would be fetched by the package manager at run time.
   */
  gpgkeys: string[];
  /**
   * `skip_if_unavailable=1` (repo or main section): a repository that cannot be reached is left
   * out with a warning. Unset (dnf 4's and tdnf's default is off): it is an error.
   */
  skipIfUnavailable?: boolean;
  /** zypper's `type=` (`rpm-md`, `yast2`, `plaindir`), when set. */
  type?: string;
  /** zypper's `path=` below the baseurl, when set and not `/`. */
  path?: string;
}

export interface RpmRepoConfig {
  tool: RpmRepoTool;
  /** Every repository defined, enabled or not, in the order the tool reads them. */
  repos: RpmRepo[];
  /** The variables expanded (`releasever`, `basearch`, `arch`, and the image's vars files). */
  vars: Readonly<Record<string, string>>;
  /** Things a caller must know about this configuration (unresolvable variables, network lookups). */
  notes: string[];
}

export interface ReadRepoConfigOptions {
  /** `$releasever`: what the image's release package provides (`9`, `2.0`, `15.6`). */
  releasever?: string;
  /** The image's rpm architecture (`x86_64`, `aarch64`); `$basearch` is derived from it. */
  arch?: string;
  /** `--mirror FROM=TO`. */
  mirrors?: Readonly<Record<string, string>>;
}

export interface IniSection {
  name: string;
  /** `file:line` of the section header. */
  origin: string;
  /**
   * Lower-cased keys; a later assignment replaces an earlier one, as in dnf and zypp, and moves
   * the key to the end: the order is that of each key's last assignment (dnf5 reads two names as
   * one setting, see `gpgcheckKeys`, and the one assigned last wins).
   */
  values: Map<string, string>;
}

const REPO_FIX = "fix the image's repository configuration";

/**
 * Parse an INI file as dnf's, tdnf's and zypp's parsers do: `[section]`, `key=value`, lines
 * starting with whitespace continue the previous value (multi-line baseurl and gpgkey lists),
 * `#` and `;` comment lines. A key outside a section or a line that is none of these is
 * INVALID_MANIFEST naming `file:line`.
 */
export function parseIni(text: string, file: string): IniSection[] {
  const sections: IniSection[] = [];
  let current: IniSection | undefined;
  let lastKey: string | undefined;
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "");
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#") || trimmed.startsWith(";")) {
      if (trimmed === "") lastKey = undefined;
      return;
    }
    const where = `${file}:${i + 1}`;
    if (/^\s/.test(line) && current && lastKey !== undefined) {
      current.values.set(lastKey, `${current.values.get(lastKey)}\n${trimmed}`);
      return;
    }
    const section = /^\[([^\]]+)\]\s*(?:[#;].*)?$/.exec(trimmed);
    if (section) {
      current = { name: section[1]!.trim(), origin: where, values: new Map() };
      sections.push(current);
      lastKey = undefined;
      return;
    }
    const eq = trimmed.indexOf("=");
    if (eq <= 0 || !current) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${where}: ${quoteUntrusted(trimmed)} is not a "[section]" or "key=value" line: ${REPO_FIX}`,
      );
    }
    lastKey = trimmed.slice(0, eq).trim().toLowerCase();
    current.values.delete(lastKey);
    current.values.set(lastKey, trimmed.slice(eq + 1).trim());
  });
  return sections;
}

/** dnf's and zypp's booleans (`1`, `yes`, `true`, `on` and their opposites); undefined when unset. */
export function iniBoolean(value: string | undefined, where: string): boolean | undefined {
  if (value === undefined || value === "") return undefined;
  const v = value.toLowerCase();
  if (["1", "yes", "true", "on"].includes(v)) return true;
  if (["0", "no", "false", "off"].includes(v)) return false;
  throw new SutureError(
    "INVALID_MANIFEST",
    `${where}: ${quoteUntrusted(value)} is not a boolean: ${REPO_FIX}`,
  );
}

/** rpm's base architecture of `arch`, what `$basearch` is (dnf's arch map, the common ones). */
export function rpmBaseArch(arch: string): string {
  if (/^i[3-6]86$|^athlon$|^geode$/.test(arch)) return "i386";
  if (/^x86_64(_v\d)?$|^amd64$|^ia32e$/.test(arch)) return "x86_64";
  if (/^armv7h?nl?$|^armv7hl$|^armv8hl$/.test(arch)) return "armhfp";
  if (/^armv[5-7]/.test(arch)) return "arm";
  if (arch === "ppc64iseries" || arch === "ppc64pseries") return "ppc64";
  return arch;
}

/**
 * Expand `$name` and `${name}` (and `${name:-default}`, `${name:+alternate}`, as dnf 4.15+ and
 * zypp do) from `vars`. An unknown variable is left as written and its name added to `unknown`.
 */
export function expandRepoVars(
  text: string,
  vars: Readonly<Record<string, string>>,
  unknown?: Set<string>,
): string {
  return text.replace(
    /\$(?:\{([A-Za-z0-9_]+)(?::([-+])([^}]*))?\}|([A-Za-z0-9_]+))/g,
    (
      whole,
      braced: string | undefined,
      op: string | undefined,
      word: string | undefined,
      bare: string | undefined,
    ) => {
      const name = (braced ?? bare)!;
      const value = Object.hasOwn(vars, name) ? vars[name] : undefined;
      if (op === "-")
        return value === undefined || value === "" ? expandRepoVars(word ?? "", vars, unknown) : value;
      if (op === "+")
        return value === undefined || value === "" ? "" : expandRepoVars(word ?? "", vars, unknown);
      if (value === undefined) {
        unknown?.add(name);
        return whole;
      }
      return value;
    },
  );
}

/** A space- or comma-separated list value (baseurl, gpgkey), one entry per word. */
function listValue(value: string | undefined): string[] {
  return (value ?? "").split(/[\s,]+/).filter(Boolean);
}

interface ToolLayout {
  /** The main configuration file and the section holding the defaults. */
  mainFile: string;
  mainSection: string;
  /** Where repositories are, when the main file does not say (`reposdir`, `repodir`). */
  repoDirs: string[];
  /** The main file's key naming the repository directories. */
  repoDirKey: string;
  varsDirs: string[];
  /** What `gpgcheck` defaults to when neither the repo nor the main file sets it. */
  gpgcheckDefault: boolean;
  /**
   * The keys that set whether packages' signatures are checked, read as one setting (the one
   * assigned last in a section wins). dnf5 reads `gpgcheck` as an alias of `pkg_gpgcheck` (and
   * later dnf 4 accept it too), so a repository with `gpgcheck=1` then `pkg_gpgcheck=0` is
   * unchecked. zypper's `pkg_gpgcheck` is its own setting (read apart below).
   */
  gpgcheckKeys: readonly string[];
}

/** The value of whichever of `keys` is assigned last in `values` (their order is last-assignment order). */
function lastAssigned(
  values: ReadonlyMap<string, string>,
  keys: readonly string[],
): [string, string] | undefined {
  let found: [string, string] | undefined;
  for (const entry of values) if (keys.includes(entry[0])) found = entry;
  return found;
}

const LAYOUTS: Record<RpmRepoTool, ToolLayout> = {
  // dnf's own default is gpgcheck off; every distribution's dnf.conf turns it on.
  dnf: {
    mainFile: "/etc/dnf/dnf.conf",
    mainSection: "main",
    repoDirs: ["/etc/yum.repos.d", "/etc/yum/repos.d", "/etc/distro.repos.d"],
    repoDirKey: "reposdir",
    varsDirs: ["/etc/dnf/vars"],
    gpgcheckDefault: false,
    gpgcheckKeys: ["gpgcheck", "pkg_gpgcheck"],
  },
  yum: {
    mainFile: "/etc/yum.conf",
    mainSection: "main",
    repoDirs: ["/etc/yum.repos.d", "/etc/yum/repos.d"],
    repoDirKey: "reposdir",
    varsDirs: ["/etc/yum/vars"],
    gpgcheckDefault: false,
    gpgcheckKeys: ["gpgcheck"],
  },
  tdnf: {
    mainFile: "/etc/tdnf/tdnf.conf",
    mainSection: "main",
    repoDirs: ["/etc/yum.repos.d"],
    repoDirKey: "repodir",
    varsDirs: ["/etc/tdnf/vars", "/etc/dnf/vars", "/etc/yum/vars"],
    gpgcheckDefault: false,
    gpgcheckKeys: ["gpgcheck"],
  },
  // zypp checks signatures unless told otherwise (zypp.conf's gpgcheck defaults on).
  zypper: {
    mainFile: "/etc/zypp/zypp.conf",
    mainSection: "main",
    repoDirs: ["/etc/zypp/repos.d"],
    repoDirKey: "reposdir",
    varsDirs: ["/etc/zypp/vars.d"],
    gpgcheckDefault: true,
    gpgcheckKeys: ["gpgcheck"],
  },
};

/** The image's repository configuration for `tool`, variables expanded. */
export async function readRpmRepoConfig(
  root: string,
  tool: RpmRepoTool,
  options: ReadRepoConfigOptions = {},
): Promise<RpmRepoConfig> {
  const layout = LAYOUTS[tool];
  const notes: string[] = [];
  const text = async (path: string) => (await readFileInRoot(root, path))?.toString("utf8");
  const mainText = await text(layout.mainFile);
  // zypp.conf's keys are dotted (`repo.refresh.delay`); its few gpg keys are plain.
  const main =
    mainText === undefined
      ? undefined
      : parseIni(mainText, layout.mainFile).find((s) => s.name === layout.mainSection);
  const mainWhere = (key: string) => `${layout.mainFile} [${layout.mainSection}] ${key}`;

  const vars: Record<string, string> = {};
  if (options.arch) {
    vars.arch = options.arch;
    vars.basearch = rpmBaseArch(options.arch);
  }
  if (options.releasever) {
    vars.releasever = options.releasever;
    const [major, minor] = options.releasever.split(".");
    vars.releasever_major = major!;
    if (minor !== undefined) vars.releasever_minor = minor;
  }
  const varsDirs =
    tool === "tdnf" && main?.values.get("varsdir") ? listValue(main.values.get("varsdir")) : layout.varsDirs;
  for (const dir of varsDirs) {
    for (const name of await listDirInRoot(root, dir)) {
      // Variables from files do not override those already set, as dnf reads its vars dirs.
      if (!/^[A-Za-z0-9_]+$/.test(name) || Object.hasOwn(vars, name)) continue;
      const value = await text(`${dir}/${name}`);
      if (value !== undefined) vars[name] = value.split("\n")[0]!.trim();
    }
  }

  const mainCheckKey = main && lastAssigned(main.values, layout.gpgcheckKeys);
  const mainGpgcheck =
    (mainCheckKey && iniBoolean(mainCheckKey[1], mainWhere(mainCheckKey[0]))) ?? layout.gpgcheckDefault;
  const mainRepoGpgcheck = iniBoolean(main?.values.get("repo_gpgcheck"), mainWhere("repo_gpgcheck"));
  const mainPkgGpgcheck = iniBoolean(main?.values.get("pkg_gpgcheck"), mainWhere("pkg_gpgcheck"));
  const mainSkip = iniBoolean(main?.values.get("skip_if_unavailable"), mainWhere("skip_if_unavailable"));
  const dirsValue = main?.values.get(layout.repoDirKey);
  const repoDirs = dirsValue ? listValue(dirsValue) : layout.repoDirs;

  const unknown = new Set<string>();
  const repos: RpmRepo[] = [];
  const seen = new Set<string>();
  for (const dir of repoDirs) {
    for (const file of await listDirInRoot(root, dir)) {
      if (!file.endsWith(".repo")) continue;
      const path = `${dir.replace(/\/+$/, "")}/${file}`;
      const content = await text(path);
      if (content === undefined) continue;
      for (const section of parseIni(content, path)) {
        if (tool !== "zypper" && section.name === "main") continue;
        const id = section.name;
        if (!/^[A-Za-z0-9_.:-]{1,200}$/.test(id)) {
          throw new SutureError(
            "INVALID_MANIFEST",
            `${section.origin}: repository id ${quoteUntrusted(id)} has characters outside A-Z a-z 0-9 - _ . : ${REPO_FIX}`,
          );
        }
        // dnf and zypper keep the first definition of an id and ignore later ones.
        if (seen.has(id)) {
          notes.push(`${section.origin}: repository ${id} is defined again; the first definition is used`);
          continue;
        }
        seen.add(id);
        const v = section.values;
        const where = (key: string) => `${section.origin} [${id}] ${key}`;
        const expand = (value: string) => expandRepoVars(value, vars, unknown);
        const baseurls = listValue(v.get("baseurl")).map(expand);
        const checkKey = lastAssigned(v, layout.gpgcheckKeys);
        const gpgcheck = (checkKey && iniBoolean(checkKey[1], where(checkKey[0]))) ?? mainGpgcheck;
        // zypp's gpgcheck is first of all the metadata's check; dnf's repo_gpgcheck defaults off.
        const repoGpgcheck =
          iniBoolean(v.get("repo_gpgcheck"), where("repo_gpgcheck")) ??
          mainRepoGpgcheck ??
          (tool === "zypper" ? gpgcheck : false);
        // zypp: gpgcheck=on checks the metadata's signature, and packages when pkg_gpgcheck says
        // so or the metadata is unsigned; suture always checks packages where the repo checks
        // anything, so only an explicit pkg_gpgcheck=off (with gpgcheck=off) turns it off.
        const pkgGpgcheck =
          tool === "zypper"
            ? (iniBoolean(v.get("pkg_gpgcheck"), where("pkg_gpgcheck")) ?? mainPkgGpgcheck ?? gpgcheck)
            : gpgcheck;
        const repo: RpmRepo = {
          id,
          origin: section.origin,
          enabled: iniBoolean(v.get("enabled"), where("enabled")) ?? true,
          baseurls,
          fetchUrls: baseurls.map((u) => mirroredUrl(u.replace(/\/+$/, ""), options.mirrors ?? {})),
          gpgcheck: pkgGpgcheck,
          repoGpgcheck,
          gpgkeys: listValue(v.get("gpgkey")).map(expand),
        };
        const name = v.get("name");
        if (name) repo.name = expand(name);
        if (iniBoolean(v.get("skip_if_unavailable"), where("skip_if_unavailable")) ?? mainSkip)
          repo.skipIfUnavailable = true;
        for (const key of ["mirrorlist", "metalink"] as const) {
          const value = v.get(key);
          if (value) repo[key] = expand(value);
        }
        if (tool === "zypper") {
          const type = v.get("type");
          if (type) repo.type = type;
          const sub = v.get("path");
          if (sub && sub !== "/") repo.path = expand(sub);
        }
        if (repo.enabled && !baseurls.length && (repo.mirrorlist || repo.metalink)) {
          notes.push(
            `${section.origin}: repository ${id} has only a ${repo.metalink ? "metalink" : "mirrorlist"}, which needs a network lookup to find its URLs`,
          );
        }
        repos.push(repo);
      }
    }
  }
  for (const name of [...unknown].sort())
    notes.push(`variable $${name} is not known; URLs using it are left as written`);
  return { tool, repos, vars, notes };
}

/** `file://` gpgkey URL → the image path it names, or undefined for a remote key. */
export function gpgKeyPath(url: string): string | undefined {
  const m = /^file:\/\/(\/.*)$/.exec(url);
  return m ? decodeURIComponent(m[1]!) : undefined;
}

/**
 * The keys `repo` trusts: its `file://` gpgkey files, read from the image through the in-root
 * resolver. A listed file that is missing is UNTRUSTED (the repository could never be verified);
 * remote keys are not fetched (they would be trusted on first use), so a repository with only
 * remote keys yields an empty keyring, which every signature check refuses.
 */
export async function repoKeyring(root: string, repo: RpmRepo): Promise<Keyring> {
  const rings: Keyring[] = [];
  for (const url of repo.gpgkeys) {
    const path = gpgKeyPath(url);
    if (path === undefined) continue;
    const bytes = await readFileInRoot(root, path);
    if (!bytes) {
      throw new SutureError(
        "UNTRUSTED",
        `${repo.origin}: repository ${repo.id} names gpgkey ${quoteUntrusted(url)}, which is not in the image: install the package that ships it (e.g. the release package) or fix gpgkey=`,
      );
    }
    rings.push(await parseKeyring(bytes, path));
  }
  return mergeKeyrings(rings);
}

/**
 * Refuse the enabled repositories whose packages the image's own tool would install unchecked
 * (`gpgcheck=0`, or no gpgcheck anywhere where the tool's default is off): suture installs
 * nothing it cannot verify. The sandbox engine calls this before the image's tool runs, since
 * the tool may take a package from any enabled repository (the native engine, which knows where
 * each package comes from, refuses per package in the same words). `--keyring` keys
 * (`extraKeys`) make such a repository checkable, since the tool then checks it against them;
 * `--allow-insecure-repositories` accepts it as the image's tool would.
 */
export function refuseUncheckedRepos(
  config: Pick<RpmRepoConfig, "repos">,
  options: { extraKeys: boolean; allowInsecure: boolean },
): void {
  if (options.extraKeys || options.allowInsecure) return;
  const unchecked = config.repos.filter((r) => r.enabled && !r.gpgcheck);
  if (!unchecked.length) return;
  const names = unchecked.map((r) => `${r.id} (${quoteUntrusted(r.origin)})`).join(", ");
  const one = unchecked.length === 1;
  throw new SutureError(
    "UNTRUSTED",
    `the image's repositor${one ? "y" : "ies"} ${names} set${one ? "s" : ""} gpgcheck=0, and suture installs only packages whose signature is verified: set gpgcheck=1 in the image, pass the vendor's key with --keyring, or --allow-insecure-repositories to take ${one ? "its" : "their"} packages unsigned`,
  );
}
