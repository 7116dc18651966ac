import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { gunzipSync, zstdCompressSync } from "node:zlib";

/**
 * Builders of real RPM artefacts for tests, made by the host's own tools: `rpmbuild` (packages),
 * `gpg` + `rpmsign` (signatures, with a throwaway key in a private GNUPGHOME), `createrepo_c`
 * (rpm-md repositories). The readers under src/distro/rpm are then checked against what `rpm -qp`,
 * `rpm -K` and `rpm2cpio | cpio -t` say about the same files.
 */

const run = promisify(execFile);

export async function tool(
  cmd: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<string> {
  const { stdout } = await run(cmd, [...args], {
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
    encoding: "utf8",
  });
  return stdout;
}

/** A throwaway OpenPGP key in its own GNUPGHOME (removed with the directory). */
export interface RpmTestKey {
  gnupgHome: string;
  /** The key's user id, what rpmsign's `_gpg_name` names. */
  uid: string;
  fingerprint: string;
  /** `gpg --export --armor`: what a repository's `gpgkey=` file holds. */
  publicArmored: string;
}

export async function rpmTestKey(
  dir: string,
  algorithm: "rsa2048" | "ed25519" = "rsa2048",
  uid = `suture rpm test ${algorithm} <rpm-test@suture.invalid>`,
): Promise<RpmTestKey> {
  const gnupgHome = await mkdtemp(join(dir, "gnupg-"));
  const env = { GNUPGHOME: gnupgHome };
  await tool(
    "gpg",
    [
      "--batch",
      "--pinentry-mode",
      "loopback",
      "--passphrase",
      "",
      "--quick-gen-key",
      uid,
      algorithm,
      "sign",
      "never",
    ],
    env,
  );
  const colons = await tool("gpg", ["--batch", "--with-colons", "--list-keys", uid], env);
  const fingerprint = /^fpr:+([0-9A-F]+):/m.exec(colons)![1]!.toLowerCase();
  const publicArmored = await tool("gpg", ["--batch", "--armor", "--export", fingerprint], env);
  return { gnupgHome, uid, fingerprint, publicArmored };
}

export interface RpmTestFile {
  /** Absolute path in the package. */
  path: string;
  content?: string;
  /** `%attr` mode, e.g. "0755". */
  mode?: string;
  symlinkTo?: string;
  /** A hard link to another file of the package (its path). */
  hardlinkTo?: string;
  directory?: boolean;
  /** `%config(noreplace)`. */
  config?: boolean;
  /** `%ghost`: listed in the header, absent from the payload. */
  ghost?: boolean;
  /** `%caps(...)`, e.g. "cap_net_raw=ep". */
  caps?: string;
  /** Plain `%config` (an edited file is saved as `.rpmsave` on upgrade). */
  configPlain?: boolean;
  /** `%doc`: left out by `rpm --excludedocs` (FILESTATES "not installed"). */
  doc?: boolean;
  /** `%lang(...)`. */
  lang?: string;
  /** Owner and group names for `%attr` (default root). */
  user?: string;
  group?: string;
}

export interface RpmTestPackage {
  name: string;
  version: string;
  release: string;
  epoch?: number;
  arch?: string;
  files: RpmTestFile[];
  requires?: string[];
  provides?: string[];
  obsoletes?: string[];
  conflicts?: string[];
  /** `Requires(pre):`. */
  requiresPre?: string[];
  /** `_binary_payload` (w9.gzdio, w6.xzdio, w19.zstdio, w9.bzdio). */
  payload?: string;
  /** More preamble lines as written in a spec (`Prefix: /opt`, `Vendor: …`, `Recommends: …`). */
  preamble?: string[];
  /** Sections after %files as written in a spec (`%filetriggerin -- /opt`, `%triggerin -- other`, …). */
  sections?: string[];
}

/** Build one binary package with the host's rpmbuild; returns the .rpm's path. */
export async function buildRpm(dir: string, pkg: RpmTestPackage): Promise<string> {
  const top = await mkdtemp(join(dir, "rpmbuild-"));
  const lines = [
    `Name: ${pkg.name}`,
    `Version: ${pkg.version}`,
    `Release: ${pkg.release}`,
    ...(pkg.epoch !== undefined ? [`Epoch: ${pkg.epoch}`] : []),
    "Summary: suture rpm test package",
    "License: MIT",
    `BuildArch: ${pkg.arch ?? "noarch"}`,
    ...(pkg.requires ?? []).map((r) => `Requires: ${r}`),
    ...(pkg.requiresPre ?? []).map((r) => `Requires(pre): ${r}`),
    ...(pkg.provides ?? []).map((r) => `Provides: ${r}`),
    ...(pkg.obsoletes ?? []).map((r) => `Obsoletes: ${r}`),
    ...(pkg.conflicts ?? []).map((r) => `Conflicts: ${r}`),
    ...(pkg.preamble ?? []),
    "%description",
    "A package built by suture's tests.",
    "%install",
  ];
  const sources = join(top, "files");
  await mkdir(sources, { recursive: true });
  pkg.files.forEach((f, i) => {
    if (f.ghost) return;
    const target = `%{buildroot}${f.path}`;
    lines.push(`mkdir -p "$(dirname "${target}")"`);
    if (f.directory) lines.push(`mkdir -p "${target}"`);
    else if (f.symlinkTo !== undefined) lines.push(`ln -s '${f.symlinkTo}' "${target}"`);
    else if (f.hardlinkTo !== undefined) lines.push(`ln "%{buildroot}${f.hardlinkTo}" "${target}"`);
    else lines.push(`cp ${join(sources, String(i))} "${target}"`);
  });
  lines.push("%files");
  for (const f of pkg.files) {
    const attrs = [
      f.config ? "%config(noreplace)" : "",
      f.configPlain ? "%config" : "",
      f.doc ? "%doc" : "",
      f.lang ? `%lang(${f.lang})` : "",
      f.ghost ? "%ghost" : "",
      f.directory ? "%dir" : "",
      f.mode || f.user || f.group ? `%attr(${f.mode ?? "-"},${f.user ?? "root"},${f.group ?? "root"})` : "",
      f.caps ? `%caps(${f.caps})` : "",
    ].filter(Boolean);
    lines.push(`${attrs.join(" ")} ${f.path}`.trim());
  }
  lines.push(...(pkg.sections ?? []));
  await Promise.all(
    pkg.files.map((f, i) =>
      f.ghost || f.directory || f.symlinkTo !== undefined || f.hardlinkTo !== undefined
        ? undefined
        : writeFile(join(sources, String(i)), f.content ?? ""),
    ),
  );
  const spec = join(top, `${pkg.name}.spec`);
  await writeFile(spec, `${lines.join("\n")}\n`);
  await tool("rpmbuild", [
    "--define",
    `_topdir ${top}`,
    "--define",
    `_binary_payload ${pkg.payload ?? "w19.zstdio"}`,
    "--define",
    "_build_id_links none",
    "--quiet",
    "-bb",
    spec,
  ]);
  const arch = pkg.arch ?? "noarch";
  const rpmDir = join(top, "RPMS", arch);
  const [file] = (await readdir(rpmDir)).filter((n) => n.endsWith(".rpm"));
  return join(rpmDir, file!);
}

/**
 * Sign packages in place with `rpmsign --addsign`: a header signature, and with `rpmv3` also the
 * legacy header+payload one (what packages signed by rpm < 4.16 carry).
 */
export async function signRpms(key: RpmTestKey, paths: readonly string[], rpmv3 = false): Promise<void> {
  await tool(
    "rpmsign",
    [
      "--define",
      `_gpg_name ${key.fingerprint}`,
      "--define",
      `_gpg_path ${key.gnupgHome}`,
      "--define",
      "__gpg /usr/bin/gpg",
      "--addsign",
      ...(rpmv3 ? ["--rpmv3"] : []),
      ...paths,
    ],
    { GNUPGHOME: key.gnupgHome },
  );
}

/** `rpm -qp --qf FORMAT path` with a private, empty database (the host's is never read). */
export async function rpmQuery(dir: string, path: string, format: string): Promise<string> {
  return tool("rpm", ["--dbpath", join(dir, "rpmdb-query"), "-qp", "--nosignature", "--qf", format, path]);
}

/** `rpm -Kv path` against a private database that trusts exactly `keys` (armored public keys). */
export async function rpmCheckSig(dir: string, path: string, keys: readonly string[]): Promise<string> {
  const db = await mkdtemp(join(dir, "rpmdb-k-"));
  for (const [i, armored] of keys.entries()) {
    const file = join(db, `key${i}.asc`);
    await writeFile(file, armored);
    await tool("rpm", ["--dbpath", db, "--import", file]);
  }
  try {
    return await tool("rpm", ["--dbpath", db, "-Kv", path]);
  } catch (e) {
    return `${(e as { stdout?: string }).stdout ?? ""}FAILED`;
  }
}

/** `rpm2cpio path | cpio -t`: the payload's member names, as the host's tools list them. */
export async function cpioListing(path: string): Promise<string[]> {
  const { stdout } = await run("sh", ["-c", 'rpm2cpio "$1" | cpio -t --quiet', "sh", path], {
    encoding: "utf8",
  });
  return stdout.split("\n").filter(Boolean);
}

export type RepoCompression = "gz" | "bz2" | "xz" | "zstd";

export interface RpmTestRepo {
  dir: string;
  repomd: Buffer;
}

/**
 * An rpm-md repository of `rpms` made by the host's createrepo_c (`--compress-type`; sha256
 * checksums unless told), signed with a detached armored `repomd.xml.asc` when `key` is given,
 * as a repository with `repo_gpgcheck=1` publishes it.
 */
export async function createRepo(
  dir: string,
  rpms: readonly string[],
  options: { compress?: RepoCompression; checksum?: "sha1" | "sha256" | "sha512"; key?: RpmTestKey } = {},
): Promise<RpmTestRepo> {
  const repo = await mkdtemp(join(dir, "repo-"));
  await mkdir(join(repo, "Packages"));
  for (const rpm of rpms) await tool("cp", [rpm, join(repo, "Packages")]);
  const compress = options.compress ?? "gz";
  // Debian's createrepo_c 0.17 has no zstd: such repositories (Fedora's, since 2023) are made
  // here from its gzip ones, recompressed and their repomd.xml entries rewritten.
  await tool("createrepo_c", [
    "--quiet",
    "--no-database",
    `--general-compress-type=${compress === "zstd" ? "gz" : compress}`,
    `--checksum=${options.checksum ?? "sha256"}`,
    repo,
  ]);
  const repomdPath = join(repo, "repodata", "repomd.xml");
  if (compress === "zstd") await recompressToZstd(repo, repomdPath, options.checksum ?? "sha256");
  if (options.key) {
    await tool(
      "gpg",
      ["--batch", "--yes", "--armor", "--local-user", options.key.fingerprint, "--detach-sign", repomdPath],
      { GNUPGHOME: options.key.gnupgHome },
    );
  }
  return { dir: repo, repomd: await readFile(repomdPath) };
}

async function recompressToZstd(repo: string, repomdPath: string, algorithm: string): Promise<void> {
  let repomd = await readFile(repomdPath, "utf8");
  const entries = [...repomd.matchAll(/<data type="[^"]+">[\s\S]*?<\/data>/g)].map((m) => m[0]);
  for (const entry of entries) {
    const href = /<location href="([^"]+)"/.exec(entry)![1]!;
    const plain = gunzipSync(await readFile(join(repo, href)));
    const packed = zstdCompressSync(plain);
    const digest = createHash(algorithm).update(packed).digest("hex");
    const newHref = `repodata/${digest}-${basename(href)
      .replace(/^[0-9a-f]+-/, "")
      .replace(/\.gz$/, ".zst")}`;
    await writeFile(join(repo, newHref), packed);
    await rm(join(repo, href));
    const rewritten = entry
      .replace(/(<checksum type="[^"]+">)[0-9a-f]+/, `$1${digest}`)
      .replace(/<location href="[^"]+"/, `<location href="${newHref}"`)
      .replace(/<size>\d+</, `<size>${packed.length}<`);
    repomd = repomd.replace(entry, rewritten);
  }
  await writeFile(repomdPath, repomd);
}

/** A scratch directory for one test file, removed by the returned function. */
export async function rpmScratch(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "suture-rpm-lab-"));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
