/**
 * Configuring without runc (issue 15): when every unpacked package's scripts and triggers have a
 * native equivalent, root mode configures natively (src/patch/engines/dpkg/native/configure.ts)
 * instead of running the image's `dpkg --configure --pending` in runc. The oracle is the real dpkg:
 * the nginx lab image is patched from the bench's library-only report twice, natively configured
 * and with the runc configure forced (SUTURE_FORCE_RUNC_CONFIGURE=1), and the two images must have
 * every file outside var/lib/dpkg/ byte-identical (content, mode, owner, link target) and the same
 * var/lib/dpkg/status; the image's own `dpkg --audit`, `dpkg -C` and `apt-get check` (in runc) must
 * find nothing wrong with the native one. openssl's postinst equivalent is held to the real script
 * on both of its branches. Needs root, runc, umoci and the lab images; a few minutes.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { NATIVE_SCRIPTS } from "../../src/patch/engines/dpkg/native/hooks/stand-ins.ts";
import { FORCE_RUNC_CONFIGURE } from "../../src/patch/engines/dpkg/native/native.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { treeDifferences, treeSnapshot } from "../lab/file-tree.ts";
import { LIBRARY_REPORT_PACKAGES, labImage, labImageValue, trivyReportFor } from "../lab/images.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap", "tool:umoci");

before(useArchiveMirror);

const run = promisify(execFile);

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-native-configure-"));
});
after(() => rm(work, { recursive: true, force: true }));

async function patched(name: string, report: string, reference: string, forceRunc: boolean) {
  const out = join(work, name);
  const saved = process.env[FORCE_RUNC_CONFIGURE];
  if (forceRunc) process.env[FORCE_RUNC_CONFIGURE] = "1";
  try {
    const { stderr } = await patchIntoOciDir({
      reference,
      engine: "native",
      out,
      cacheDir: join(work, "cache"),
      report,
      extraArgs: ["--progress", "plain"],
    });
    const rootfs = join(work, `${name}-rootfs`);
    await run("umoci", ["raw", "unpack", "--image", `${out}:native`, rootfs]);
    return { out, rootfs, stderr };
  } finally {
    if (saved === undefined) delete process.env[FORCE_RUNC_CONFIGURE];
    else process.env[FORCE_RUNC_CONFIGURE] = saved;
  }
}

/** /usr/lib/ssl as lstat sees it (owner, mode, link target) and, when a directory, what is below it. */
async function sslOf(root: string): Promise<string[]> {
  const path = join(root, "usr/lib/ssl");
  const st = await lstat(path).catch(() => undefined);
  if (!st) return ["absent"];
  const self = `${st.isSymbolicLink() ? `link ${await readlink(path)}` : st.isDirectory() ? "dir" : "file"} ${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`;
  const below = st.isDirectory() ? [...(await treeSnapshot(path))].map(([p, e]) => `${p} ${e}`) : [];
  return [self, ...below];
}

async function inImage(sb: Sandbox, args: string[]): Promise<{ exitCode: number; output: string }> {
  const r = await sb.run(args, { timeoutMs: 300_000, env: ["LC_ALL=C"] });
  return { exitCode: r.exitCode, output: `${r.stdout}${r.stderr}` };
}

test("library-only nginx patch: configured natively without runc, the same image and dpkg database as the real dpkg --configure leaves", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report, fixes } = await trivyReportFor("bookwormNginx", {
    only: LIBRARY_REPORT_PACKAGES,
    outFile: join(work, "lib.json"),
  });
  assert.ok(fixes.length >= 8, `a real library report (${fixes.map((f) => f.name).join(", ")})`);
  const native = await patched("native", report, lab.reference, false);
  const oracle = await patched("runc", report, lab.reference, true);

  // What the user sees: the hooks done natively, and no dpkg --configure run.
  assert.match(native.stderr, /configuring natively/);
  assert.doesNotMatch(native.stderr, /dpkg --configure/);
  assert.match(native.stderr, /hook +openssl postinst: done natively/);
  assert.match(native.stderr, /hook +libc-bin ldconfig: done natively/);
  assert.match(oracle.stderr, /running maintainer scripts and triggers \(dpkg --configure\)/);

  const [a, b] = [await treeSnapshot(oracle.rootfs), await treeSnapshot(native.rootfs)];
  const differ = treeDifferences(a, b, ["runc", "native"]).filter((d) => !d.startsWith("/var/lib/dpkg/"));
  assert.deepEqual(differ, [], `files outside var/lib/dpkg differ:\n${differ.join("\n")}`);
  const status = (root: string) => readFile(join(root, "var/lib/dpkg/status"), "utf8");
  assert.equal(await status(native.rootfs), await status(oracle.rootfs), "var/lib/dpkg/status");
  const triggers = (m: Map<string, string>) =>
    [...m].filter(([p]) => p.startsWith("/var/lib/dpkg/triggers/")).map(([p, e]) => `${p} ${e}`);
  // dpkg's Lock is its own run's; everything else it keeps about triggers must match.
  const noLock = (l: string[]) => l.filter((p) => !p.startsWith("/var/lib/dpkg/triggers/Lock "));
  assert.deepEqual(noLock(triggers(b)), noLock(triggers(a)), "var/lib/dpkg/triggers/");
  const infoOf = (m: Map<string, string>) =>
    [...m].filter(([p]) => p.startsWith("/var/lib/dpkg/info/")).map(([p, e]) => `${p} ${e}`);
  assert.deepEqual(infoOf(b), infoOf(a), "var/lib/dpkg/info/");

  // The judge: the image's own dpkg and apt find nothing half-done in the native result.
  await inLayoutImage({ ociDir: native.out, tag: "native" }, join(work, "judge"), async (sb) => {
    for (const args of [
      ["dpkg", "--audit"],
      ["dpkg", "-C"],
      ["apt-get", "check", "-q"],
    ]) {
      const r = await inImage(sb, args);
      assert.equal(r.exitCode, 0, `${args.join(" ")}: ${r.output}`);
      if (args[0] === "dpkg") assert.equal(r.output, "", `${args.join(" ")} prints nothing`);
    }
    const r = await inImage(sb, [
      "dpkg-query",
      "-W",
      "-f",
      "${db:Status-Abbrev}${Package}\\n",
      ...LIBRARY_REPORT_PACKAGES,
      "libc-bin",
    ]);
    assert.equal(r.exitCode, 0, r.output);
    for (const line of r.output.trim().split("\n")) assert.match(line, /^ii /, line);
  });
});

test("openssl's postinst done natively is the real script's result, with /usr/lib/ssl present, absent or dangling", async () => {
  const lab = await labImage("bookwormNginx");
  const image = await labImageValue(lab);
  const options = { cacheDir: join(work, "layers"), workRoot: join(work, "sandboxes") };
  const equivalent = NATIVE_SCRIPTS.find((s) => s.package === "openssl" && s.script === "postinst")!;
  const cases: { name: string; prepare: (root: string) => Promise<void> }[] = [
    { name: "present (the package's directory)", prepare: async () => {} },
    { name: "absent", prepare: (root) => rm(join(root, "usr/lib/ssl"), { recursive: true }) },
    {
      name: "a dangling symlink",
      prepare: async (root) => {
        await rm(join(root, "usr/lib/ssl"), { recursive: true });
        await symlink("/nowhere/ssl", join(root, "usr/lib/ssl"));
      },
    },
    {
      name: "a symlink to an existing directory",
      prepare: async (root) => {
        await rm(join(root, "usr/lib/ssl"), { recursive: true });
        await mkdir(join(root, "srv/ssl"), { recursive: true });
        await symlink("/srv/ssl", join(root, "usr/lib/ssl"));
      },
    },
  ];
  for (const c of cases) {
    await withSandbox(image, options, async (real) => {
      await withSandbox(image, options, async (native) => {
        const script = await readFile(join(real.mergedDir, "var/lib/dpkg/info/openssl.postinst"));
        assert.ok(
          equivalent.texts.has(createHash("sha256").update(script).digest("hex")),
          "the image's openssl postinst is a text the equivalent stands for",
        );
        for (const sb of [real, native]) await c.prepare(sb.mergedDir);
        const r = await inImage(real, [
          "/var/lib/dpkg/info/openssl.postinst",
          "configure",
          "3.0.20-1~deb12u2",
        ]);
        assert.equal(r.exitCode, 0, r.output);
        const outcome = await equivalent.run(native.mergedDir, ["configure", "3.0.20-1~deb12u2"]);
        assert.ok(outcome.done, `${c.name}: ${!outcome.done ? outcome.unsupported : ""}`);
        const [x, y] = [await sslOf(real.mergedDir), await sslOf(native.mergedDir)];
        assert.deepEqual(y, x, `${c.name}: /usr/lib/ssl`);
        assert.notEqual(x[0], "absent", `${c.name}: /usr/lib/ssl exists after the real script`);
      });
    });
  }
});
