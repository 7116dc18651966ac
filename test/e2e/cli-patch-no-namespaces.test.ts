/**
 * Patching with no namespaces at all (issue 16, mode 3): an unprivileged user that cannot create a
 * user namespace (a locked-down pod) patches with the native engine in a private working tree,
 * owners taken from the layers' metadata. The patch layer must be the one root mode writes; an
 * image whose fix needs maintainer scripts is refused in one line and nothing is pushed; an
 * interrupt leaves nothing behind.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { alpineLabImage } from "../lab/alpine-lab.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { distrolessLabImage } from "../lab/distroless.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { requiring } from "../lab/requirements.ts";
import { leftIn, startUnprivilegedLab, type UnprivilegedLab } from "../lab/unprivileged.ts";

const { after, before, test } = await requiring("root", "loopback", "runc", "tool:runuser");

before(useArchiveMirror);

// A fix whose package's maintainer scripts have no native equivalent (nginx-common's).
const SCRIPT_PACKAGES = ["libssl3", "openssl", "nginx-common", "libexpat1"];
// Libraries whose configure is the ldconfig trigger, and openssl's and unzip's scripts, all of
// which have native equivalents (src/patch/engines/dpkg/native/configure.ts).
const NATIVE_PACKAGES = ["libssl3", "openssl", "unzip", "libexpat1", "liblzma5", "libpcre2-8-0"];

let ulab: UnprivilegedLab;
/** A directory first on the user's PATH whose `unshare` always fails, as in a default-seccomp pod. */
let noUnshare: string;

before(async () => {
  noUnshare = await mkdtemp(join(tmpdir(), "suture-no-unshare-"));
  await chmod(noUnshare, 0o755);
  await writeFile(
    join(noUnshare, "unshare"),
    "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n",
    { mode: 0o755 },
  );
  ulab = await startUnprivilegedLab({ prefix: "suture-nons-", pathFirst: noUnshare });
});
after(async () => {
  await ulab?.close();
  await rm(noUnshare, { recursive: true, force: true });
});

async function tagExists(repo: string, tag: string): Promise<boolean> {
  const r = await fetch(`http://${ulab.registry.host}/v2/${repo}/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  return r.ok;
}

test("suture doctor, where unshare fails for the user: no-namespaces, supported (exit 0)", async () => {
  const { stdout } = await ulab.asUser(["doctor", "--format", "json"]);
  const d = JSON.parse(stdout) as { mode: string; supported: boolean; checks: { id: string; ok: boolean }[] };
  assert.equal(d.mode, "no-namespaces");
  assert.equal(d.supported, true);
  assert.equal(d.checks.find((c) => c.id === "user-namespaces")?.ok, false);
});

test("distroless, no user namespace possible: mode 3 is chosen and its patch layer is root mode's, entry for entry", async () => {
  const lab = await distrolessLabImage();
  const src = await ulab.pushLab(lab.reference, "lab/distroless");
  const { userStderr, user, root } = await ulab.patchAsUserAndRoot(src, "lab/distroless", []);
  assert.match(userStderr, /mode: no-namespaces/);
  assert.ok(root.length > 5, `root mode wrote a real layer (${root.length} entries)`);
  assert.deepEqual(user, root);
  const { uid } = ulab.user;
  assert.ok(
    user.every((l) => !l.includes(` ${uid}:`)),
    "no entry carries the unprivileged user's own id",
  );
});

test("nginx with nginx-common's fix: refused in one line naming the packages whose scripts must run, nothing pushed", async () => {
  const nginx = await labImage("bookwormNginx");
  const report = await trivyReportFor("bookwormNginx", {
    only: SCRIPT_PACKAGES,
    outFile: join(ulab.work, "lib.json"),
  });
  await chmod(report.path, 0o644);
  const src = await ulab.pushLab(nginx.reference, "lab/nginx");
  const { code, lines } = await ulab.refusedAsUser(
    [
      "patch",
      "-i",
      src,
      "-r",
      report.path,
      "--push",
      "-t",
      `${ulab.registry.host}/lab/nginx:user`,
      "--progress",
      "quiet",
    ],
    { SUTURE_PATCH_MODE: "no-namespaces" },
  );
  assert.equal(code, 1);
  assert.equal(lines.length, 1, lines.join("\n"));
  // nginx-common's scripts have no native equivalent (openssl's postinst and the libraries'
  // ldconfig trigger have one, so they are not named).
  assert.match(lines[0]!, /^error: the no-namespaces mode runs no code of the image, and .*nginx-common \(/);
  assert.doesNotMatch(lines[0]!, /openssl|libssl3/);
  assert.match(lines[0]!, /patch as root, or where user namespaces work/);
  assert.match(lines[0]!, /\[NEEDS_RUNTIME\]$/);
  assert.equal(await tagExists("lab/nginx", "user"), false, "nothing was pushed");
});

test("nginx, libraries with native equivalents for every script and trigger: mode 3 configures them as root mode does, and dpkg --audit finds nothing", async () => {
  const nginx = await labImage("bookwormNginx");
  // Configuring them is libc-bin's ldconfig trigger and openssl's and unzip's known scripts.
  const report = await trivyReportFor("bookwormNginx", {
    only: NATIVE_PACKAGES,
    outFile: join(ulab.work, "trigger-only.json"),
  });
  await chmod(report.path, 0o644);
  const src = await ulab.pushLab(nginx.reference, "lab/nginx-trigger");
  const { userStderr, user, root } = await ulab.patchAsUserAndRoot(
    src,
    "lab/nginx-trigger",
    ["-r", report.path],
    {
      extra: { SUTURE_PATCH_MODE: "no-namespaces" },
    },
  );
  assert.match(userStderr, /mode: no-namespaces/);
  assert.match(userStderr, /hook +libc-bin ldconfig: done natively/);
  assert.match(userStderr, /hook +openssl postinst: done natively/);
  // Root mode configures these natively too (one decision for every mode), so the layers are
  // the same entry for entry, the dpkg database included; the differential test
  // (test/integration/dpkg-native-configure.test.ts) holds that configure to the real dpkg's.
  assert.deepEqual(user, root);
  // The judge: the image's own dpkg, in runc over the user's patched image, finds nothing half-done.
  await inLayoutImage(
    { ociDir: join(ulab.work, "layout-lab-nginx-trigger-user"), tag: "x" },
    join(ulab.work, "judge"),
    async (sb) => {
      for (const args of [
        ["dpkg", "--audit"],
        ["dpkg", "-C"],
      ]) {
        const r = await sb.run(args, { timeoutMs: 300_000, env: ["LC_ALL=C"] });
        assert.equal(r.exitCode, 0, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
        assert.equal(`${r.stdout}${r.stderr}`, "", `${args.join(" ")} prints nothing`);
      }
    },
  );
});

test("SIGINT mid-patch leaves no process, temp dir or working tree of the user behind", async () => {
  const nginx = await labImage("bookwormNginx");
  await ulab.pushLab(nginx.reference, "lab/nginx");
  const src = `docker://${ulab.registry.host}/lab/nginx:1`;
  // Interrupted while the working tree is being copied: layers are extracted, the tree half made.
  const { code, stderr, tmp, cache, processesLeft } = await ulab.interruptedPatch({
    src,
    target: `${ulab.registry.host}/lab/nginx:int3`,
    when: /into a private working tree/,
    extra: { SUTURE_PATCH_MODE: "no-namespaces" },
  });
  assert.equal(code, 130, stderr);
  assert.equal(processesLeft, "", "no process of this patch is left");
  assert.deepEqual(await leftIn(tmp), [], "no temp file of the user is left");
  const left = (await readdir(cache).catch(() => [] as string[])).filter((n) => n.startsWith("patch-"));
  assert.deepEqual(left, [], "no patch work dir (and so no working tree) is left in the cache");
  assert.equal(await tagExists("lab/nginx", "int3"), false);
});

test("an Alpine image is refused in one line naming the modes that patch it, nothing written", async () => {
  const lab = await alpineLabImage("app");
  const out = join(ulab.userHome, "alpine-out");
  const { code, lines } = await ulab.refusedAsUser(
    ["patch", "-i", lab.ref, "--oci-dir", out, "-t", "patched", "--progress", "quiet"],
    { SUTURE_PATCH_MODE: "no-namespaces" },
  );
  assert.equal(code, 1);
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(
    lines[0]!,
    /no-namespaces mode patches Debian and Ubuntu \(dpkg\) images only so far.*\[NEEDS_RUNTIME\]$/,
  );
  assert.equal(await stat(out).catch(() => undefined), undefined, "no output was written");
});
