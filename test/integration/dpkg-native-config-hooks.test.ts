/**
 * Differential tests of two native hooks that shorten `dpkg --configure` (src/patch/engines/dpkg/
 * native/hooks/): ca-certificates' debconf config loop precomputed (ca-certificates-config.ts) and
 * dpkg-maintscript-helper's no-op postinst calls recorded (maintscript-helper.ts). On the lab's
 * bookwormNginx image, bookworm-security's package is unpacked by the image's dpkg in two copies;
 * one is configured by the real scripts (the oracle), the other with suture's stand-ins in place;
 * the results must be byte-identical, the scripts restored, and the hook events must say which
 * path ran. Needs root, runc, the lab image and the Debian archive. About 3-4 minutes (the real
 * config loop alone takes 10-20 s on a loaded machine, and runs in every oracle).
 */
import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Image } from "../../src/image/image.ts";
import { type HookOutcome, placeStandIns } from "../../src/patch/engines/dpkg/native/hooks/stand-ins.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { assertSameTrees, treeSnapshot } from "../lab/file-tree.ts";
import { labImage, labImageValue } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";
import { newerSecurityDebs } from "../lab/security-debs.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap");

before(useArchiveMirror);

let work: string;
let image: Image;
const debs = new Map<string, { version: string; path: string }>();

before(async () => {
  work = await mkdtemp("/var/tmp/suture-config-hooks-");
  const lab = await labImage("bookwormNginx");
  image = await labImageValue(lab);
  for (const d of await newerSecurityDebs(["ca-certificates", "tzdata"], lab, join(work, "apt")))
    debs.set(d.name, { version: d.version, path: d.path });
});
after(() => rm(work, { recursive: true, force: true }));

const sandboxOptions = () => ({ cacheDir: join(work, "layers"), workRoot: join(work, "sandboxes") });
/** As the native engine runs dpkg (run-apt.ts's aptEnv, without the proxy). */
const ENV = ["DEBIAN_FRONTEND=noninteractive", "DEBCONF_NONINTERACTIVE_SEEN=true", "LC_ALL=C"];

async function run(sb: Sandbox, args: string[]): Promise<string> {
  const r = await sb.run(args, { timeoutMs: 900_000, env: ENV });
  assert.equal(r.exitCode, 0, `${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * Unpack `pkg`'s bookworm-security deb in two copies of the image (prepared alike by `prepare`),
 * configure one with the real scripts and the other with the stand-ins (`betweenPlaceAndRun`
 * runs on the native copy after they are placed), and compare `dirs`. Returns the native
 * copy's hook outcomes.
 */
async function configureBothWays(
  pkg: string,
  dirs: readonly string[],
  prepare: (sb: Sandbox, side: "real" | "native") => Promise<void>,
  betweenPlaceAndRun: (sb: Sandbox) => Promise<void> = async () => {},
): Promise<HookOutcome[]> {
  const deb = debs.get(pkg)!;
  return withSandbox(image, sandboxOptions(), (real) =>
    withSandbox(image, sandboxOptions(), async (native) => {
      for (const [sb, side] of [
        [real, "real"],
        [native, "native"],
      ] as const) {
        await copyFile(deb.path, join(sb.mergedDir, "suture-new.deb"));
        await run(sb, ["dpkg", "--unpack", "/suture-new.deb"]);
        await rm(join(sb.mergedDir, "suture-new.deb"));
        await prepare(sb, side);
      }
      const info = await treeSnapshot(native.mergedDir, "/var/lib/dpkg/info");
      const programs = await treeSnapshot(native.mergedDir, "/usr/bin");
      const standIns = await placeStandIns(native.mergedDir, new Set([pkg]));
      await betweenPlaceAndRun(native);
      let outcomes: HookOutcome[];
      try {
        await run(real, ["dpkg", "--configure", "--pending"]);
        await run(native, ["dpkg", "--configure", "--pending"]);
        outcomes = await standIns.replay(
          async (args) => void (await run(native, args)),
          () => {},
        );
      } finally {
        await standIns.restore();
      }
      assertSameTrees(
        info,
        await treeSnapshot(native.mergedDir, "/var/lib/dpkg/info"),
        "the scripts after the run",
      );
      assertSameTrees(
        programs,
        await treeSnapshot(native.mergedDir, "/usr/bin"),
        "the programs after the run",
      );
      for (const dir of dirs)
        assertSameTrees(
          await treeSnapshot(real.mergedDir, dir),
          await treeSnapshot(native.mergedDir, dir),
          dir,
        );
      const status = (sb: Sandbox) => readFile(join(sb.mergedDir, "var/lib/dpkg/status"), "utf8");
      assert.equal(await status(native), await status(real), "the dpkg status file");
      return outcomes;
    }),
  );
}

const CA_DIRS = ["/etc", "/usr/share/ca-certificates", "/var/cache/debconf", "/var/lib/dpkg"];

function loopOutcome(outcomes: HookOutcome[]): HookOutcome | undefined {
  return outcomes.find((o) => o.package === "ca-certificates" && o.hook === "config certificate loop");
}

test("ca-certificates' config loop precomputed: /etc, /etc/ssl, the certificates and debconf's database end byte-identical to the real config script's", async () => {
  const outcomes = await configureBothWays("ca-certificates", CA_DIRS, async () => {});
  assert.deepEqual(
    outcomes.map((o) => [o.package, o.hook, o.ran]),
    [
      ["ca-certificates", "config certificate loop", "native"],
      ["ca-certificates", "update-ca-certificates", "native"],
    ],
  );
  assert.equal(loopOutcome(outcomes)?.detail, "precomputed");
});

test("ca-certificates' config loop precomputed with a deselected certificate, one missing from the selection and trust_new_crts=ask: byte-identical", async () => {
  const outcomes = await configureBothWays("ca-certificates", CA_DIRS, async (sb) => {
    const conf = join(sb.mergedDir, "etc/ca-certificates.conf");
    const text = await readFile(conf, "utf8");
    await writeFile(
      conf,
      text
        .replace(/^mozilla\/ACCVRAIZ1\.crt$/m, "!mozilla/ACCVRAIZ1.crt")
        .replace(/^mozilla\/ISRG_Root_X1\.crt\n/m, ""),
    );
    // A certificate the administrator added below /usr/share/ca-certificates, with a quote in its name.
    await mkdir(join(sb.mergedDir, "usr/share/ca-certificates/local"), { recursive: true });
    await copyFile(
      join(sb.mergedDir, "usr/share/ca-certificates/mozilla/ISRG_Root_X2.crt"),
      join(sb.mergedDir, "usr/share/ca-certificates/local/it's-mine.crt"),
    );
    await run(sb, [
      "sh",
      "-c",
      "echo 'ca-certificates ca-certificates/trust_new_crts select ask' | debconf-set-selections",
    ]);
  });
  const loop = loopOutcome(outcomes);
  assert.equal(loop?.ran, "native", "the guard matched the precomputed inputs");
});

test("ca-certificates' config loop: inputs changed after the precomputation fail the guard, and the original loop runs (byte-identical)", async () => {
  const deselect = async (sb: Sandbox) => {
    const conf = join(sb.mergedDir, "etc/ca-certificates.conf");
    await writeFile(
      conf,
      (await readFile(conf, "utf8")).replace(/^mozilla\/GTS_Root_R1\.crt$/m, "!mozilla/GTS_Root_R1.crt"),
    );
  };
  const outcomes = await configureBothWays(
    "ca-certificates",
    CA_DIRS,
    async (sb, side) => {
      // The oracle's selection changes before it runs; the native copy's after the precomputation.
      if (side === "real") await deselect(sb);
    },
    deselect,
  );
  const loop = loopOutcome(outcomes);
  assert.equal(loop?.ran, "script");
  assert.match(loop!.detail, /differed/);
});

test("dpkg-maintscript-helper: tzdata's 16 dir_to_symlink calls are recorded as no-ops; the zoneinfo tree and its posix links end byte-identical", async () => {
  const outcomes = await configureBothWays(
    "tzdata",
    ["/usr/share/zoneinfo", "/etc", "/var/cache/debconf", "/var/lib/dpkg"],
    async () => {},
  );
  const helper = outcomes.find((o) => o.hook === "dpkg-maintscript-helper");
  assert.equal(helper?.calls, 16);
  assert.equal(helper?.ran, "native");
  assert.equal(helper!.detail, "dir_to_symlink with nothing to do ×16");
});

test("dpkg-maintscript-helper: a dir_to_symlink left half done (a staging directory and its backup) runs the real helper, which finishes it alike", async () => {
  const outcomes = await configureBothWays(
    "tzdata",
    ["/usr/share/zoneinfo", "/etc", "/var/lib/dpkg"],
    async (sb) => {
      // What the helper's preinst leaves when upgrading from before 2022g-1: posix/US a staging
      // directory holding a file unpacked since, and the old directory as posix/US.dpkg-backup.
      const us = join(sb.mergedDir, "usr/share/zoneinfo/posix/US");
      await rm(us);
      await mkdir(us);
      await writeFile(join(us, ".dpkg-staging-dir"), "");
      await writeFile(join(us, "Suture_Test"), "TZif-ish\n");
      await mkdir(`${us}.dpkg-backup`);
      await writeFile(join(`${us}.dpkg-backup`, "Eastern"), "old\n");
    },
  );
  const helper = outcomes.find((o) => o.hook === "dpkg-maintscript-helper");
  assert.equal(helper?.calls, 15, "the other 15 calls are no-ops; US's ran for real at once");
});
