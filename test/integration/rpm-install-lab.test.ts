/**
 * The native rpm installer on the lab's dnf image (Rocky-9-like, test/lab/rpm-lab.ts), in suture's
 * real sandbox (the image's layers under an overlay, scriptlets in runc): the repository's fixed
 * builds are installed once by installRpmPackages and once, in a second sandbox of the same
 * image, by the image's own rpm 4.18 (`rpm -U` in runc). The two roots must hold the same files
 * (modes, owners, contents, links, mtimes, .rpmnew), and the image's rpm must say the same of
 * both: `rpm -qa`, the file states, `rpm -Va`.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { join } from "node:path";
import { readInstalledRpmsInRoot } from "../../src/distro/rpm/installed.ts";
import { openRpm } from "../../src/distro/rpm/package.ts";
import { installRpmPackages, type RpmInstallItem } from "../../src/patch/engines/rpm/native/install.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { requiring } from "../lab/requirements.ts";
import { tool } from "../lab/rpm.ts";
import {
  RPM_LAB_CHANGED_UNEDITED_CONFIG,
  RPM_LAB_EDITED_CONFIG,
  rpmLabFixes,
  rpmLabImage,
  rpmLabRepoFiles,
} from "../lab/rpm-lab.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "tool:umoci",
  "tool:mmdebstrap",
  "tool:rpmbuild",
  "tool:createrepo_c",
  "tool:gpg",
);

let work: string;
before(() => {
  work = mkdtempSync("/var/tmp/suture-rpm-install-lab-");
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Paths that differ between any two runs (rpm's own database, caches and logs, ld.so's cache). */
const VOLATILE =
  /^\/(?:var\/lib\/rpm|var\/cache|var\/log|var\/tmp|tmp|run|proc|sys|dev)(?:\/|$)|^\/etc\/ld\.so\.cache$/;

function treeOf(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const name of readdirSync(join(root, dir)).sort()) {
      const path = `${dir}/${name}`;
      if (VOLATILE.test(path)) continue;
      const st = lstatSync(join(root, path));
      const base = `${(st.mode & 0o177777).toString(8)} ${st.uid}:${st.gid}`;
      if (st.isDirectory()) {
        out.set(path, base);
        walk(path);
      } else if (st.isSymbolicLink()) out.set(path, `${base} -> ${readlinkSync(join(root, path))}`);
      else
        out.set(
          path,
          `${base} ${Math.floor(st.mtimeMs / 1000)} ${createHash("sha256")
            .update(readFileSync(join(root, path)))
            .digest("hex")} nlink=${st.nlink}`,
        );
    }
  };
  walk("");
  return out;
}

async function inImage(sb: Sandbox, args: string[]): Promise<string> {
  const r = await sb.run(args, { timeoutMs: 600_000 });
  return `${r.exitCode} ${r.stdout}${r.stderr}`;
}

/** What the image's rpm says of its packages: NEVRAs with their file states, and rpm -Va. */
async function rpmView(sb: Sandbox): Promise<{ qa: string; states: string; verify: string }> {
  const qa = await inImage(sb, ["rpm", "-qa", "--qf", "%{NEVRA}\\n"]);
  const names = qa.slice(2).trim().split("\n").sort();
  return {
    qa: names.join("\n"),
    states: await inImage(sb, [
      "rpm",
      "-q",
      "--qf",
      "%{NEVRA}\\n[%{FILESTATES:fstate} %{FILENAMES}\\n]",
      ...names,
    ]),
    verify: (await inImage(sb, ["rpm", "-Va", "--nodeps"])).split("\n").sort().join("\n"),
  };
}

test("on the lab's dnf image, the native installer leaves what the image's own rpm -U leaves", async () => {
  const image = await rpmLabImage("dnf");
  const repo = await rpmLabRepoFiles();
  const fixes = await rpmLabFixes("dnf");
  assert.ok(fixes.length >= 3, "the lab has fixes pending");
  const files = fixes.map((f) => {
    const pkg = repo.packages.find((p) => p.name === f.name)!;
    return join(repo.root, "Packages", pkg.fixed!.file);
  });

  await inLayoutImage({ ociDir: image.ociDir }, join(work, "ours"), async (ours) => {
    await inLayoutImage({ ociDir: image.ociDir }, join(work, "theirs"), async (theirs) => {
      // The image's rpm, in runc, with the fixed packages bind-mounted read-only.
      const rpmU = await theirs.run(
        ["sh", "-c", 'rpm -U --nodeps "$@"', "sh", ...files.map((f) => `/run/fixes/${f.split("/").at(-1)}`)],
        {
          timeoutMs: 600_000,
          mounts: [{ destination: "/run/fixes", source: join(repo.root, "Packages"), options: ["ro"] }],
        },
      );
      assert.equal(rpmU.exitCode, 0, `${rpmU.stdout}${rpmU.stderr}`);

      const db = await readInstalledRpmsInRoot(ours.mergedDir);
      assert.ok(db);
      const items: RpmInstallItem[] = [];
      for (const file of files) {
        const pkg = await openRpm(file);
        const replaces = db.packages.find(
          (p) => p.nevra.name === pkg.nevra.name && p.nevra.arch === pkg.nevra.arch,
        );
        items.push({ pkg, file, repository: "rocky-baseos", ...(replaces ? { replaces } : {}) });
      }
      const outcome = await installRpmPackages(items, {
        sandbox: ours,
        database: db.location,
        installed: db.packages,
        obsoleted: [],
        runScripts: true,
        progress: () => {},
      });

      const diffs: string[] = [];
      const a = treeOf(ours.mergedDir);
      const b = treeOf(theirs.mergedDir);
      for (const path of new Set([...a.keys(), ...b.keys()]))
        if (a.get(path) !== b.get(path)) diffs.push(`${path}: suture ${a.get(path)} rpm ${b.get(path)}`);
      assert.deepEqual(diffs, []);

      const [edited, unchanged] = RPM_LAB_EDITED_CONFIG;
      assert.ok(existsSync(join(ours.mergedDir, `${edited}.rpmnew`)), `${edited}.rpmnew is written`);
      assert.ok(!existsSync(join(ours.mergedDir, `${unchanged}.rpmnew`)));
      assert.ok(outcome.warnings.some((w) => w.includes(`${edited} created as ${edited}.rpmnew`)));
      assert.notEqual(
        readFileSync(join(ours.mergedDir, RPM_LAB_CHANGED_UNEDITED_CONFIG), "utf8"),
        "",
        "the unedited config is the new version's",
      );

      const mine = await rpmView(ours);
      const rpms = await rpmView(theirs);
      assert.equal(mine.qa, rpms.qa);
      for (const f of fixes)
        assert.match(mine.qa, new RegExp(`^${f.name}-${f.fixed.replace(/[.+^]/g, "\\$&")}\\.`, "m"));
      assert.equal(mine.states, rpms.states);
      assert.equal(mine.verify, rpms.verify);
    });
  });
});

test("on the lab's micro image (no shell, no rpm), ldconfig scriptlets run as the program itself and the files are rpm's", async () => {
  const image = await rpmLabImage("micro");
  const repo = await rpmLabRepoFiles();
  const fixes = await rpmLabFixes("micro");
  assert.ok(fixes.length >= 1, "the lab has fixes pending");
  const files = fixes.map((f) =>
    join(repo.root, "Packages", repo.packages.find((p) => p.name === f.name)!.fixed!.file),
  );

  await inLayoutImage({ ociDir: image.ociDir }, join(work, "micro-ours"), async (ours) => {
    await inLayoutImage({ ociDir: image.ociDir }, join(work, "micro-theirs"), async (theirs) => {
      // The image has no rpm: the host's, into its root (a `-p /sbin/ldconfig` needs no shell).
      await tool("rpm", [
        "--root",
        theirs.mergedDir,
        "--dbpath",
        "/var/lib/rpm",
        "-U",
        "--nodeps",
        "--nosignature",
        ...files,
      ]);

      const db = await readInstalledRpmsInRoot(ours.mergedDir);
      assert.ok(db);
      const items: RpmInstallItem[] = [];
      for (const file of files) {
        const pkg = await openRpm(file);
        const replaces = db.packages.find(
          (p) => p.nevra.name === pkg.nevra.name && p.nevra.arch === pkg.nevra.arch,
        );
        items.push({ pkg, file, repository: "ubi-9-baseos", ...(replaces ? { replaces } : {}) });
      }
      const ran: string[][] = [];
      const sandbox = {
        mergedDir: ours.mergedDir,
        run: (args: string[], options?: Parameters<Sandbox["run"]>[1]) => {
          ran.push(args);
          return ours.run(args, options);
        },
      };
      const said: string[] = [];
      await installRpmPackages(items, {
        sandbox,
        database: db.location,
        installed: db.packages,
        obsoleted: [],
        runScripts: false,
        progress: (e) => {
          if (e.type === "info") said.push(e.message);
        },
      });
      assert.ok(
        ran.length > 0 && ran.every((a) => /\/ldconfig$/.test(a[0]!) && a.length === 1),
        JSON.stringify(ran),
      );
      // What the user reads says the program ran, not a scriptlet (the image has no shell).
      const running = said.filter((m) => m.startsWith("running "));
      assert.ok(
        running.length > 0 &&
          running.every((m) => /^running \S*\/ldconfig for the %\w+ of .* \(no shell needed\)$/.test(m)),
        JSON.stringify(running),
      );

      const diffs: string[] = [];
      const a = treeOf(ours.mergedDir);
      const b = treeOf(theirs.mergedDir);
      for (const path of new Set([...a.keys(), ...b.keys()]))
        if (a.get(path) !== b.get(path)) diffs.push(`${path}: suture ${a.get(path)} rpm ${b.get(path)}`);
      assert.deepEqual(diffs, []);
      // The same packages and file states, as the host's rpm reads both databases.
      const view = async (root: string) =>
        tool("rpm", [
          "--root",
          root,
          "--dbpath",
          "/var/lib/rpm",
          "-qa",
          "--qf",
          "%{NEVRA}\\n[%{FILESTATES:fstate} %{FILENAMES}\\n]",
        ]).then((o) => o.split("\n").sort().join("\n"));
      assert.equal(await view(ours.mergedDir), await view(theirs.mergedDir));
    });
  });
});
