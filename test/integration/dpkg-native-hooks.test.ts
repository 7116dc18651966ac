/**
 * Differential tests of the dpkg native engine's hook equivalents (src/patch/engines/dpkg/native/
 * hooks/): on the lab's bookwormNginx image, the real program runs in runc over one copy of the
 * image (the oracle) and suture's native equivalent over another, from the same starting state;
 * the results must be byte-identical (file contents, symlink targets, modes). Also: OpenSSL's
 * subject hash against the image's own `openssl x509 -hash` for every certificate it ships, and
 * the stand-in mechanism (a known program text is replaced while dpkg runs and put back after; an
 * unknown one is left alone). Needs root, runc and the lab image. About a minute.
 */
import assert from "node:assert/strict";
import { appendFile, copyFile, mkdir, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Image } from "../../src/image/image.ts";
import { placeStandIns } from "../../src/patch/engines/dpkg/native/hooks/stand-ins.ts";
import { updateCaCertificates } from "../../src/patch/engines/dpkg/native/hooks/update-ca-certificates.ts";
import {
  certificateSubject,
  subjectNameHash,
} from "../../src/patch/engines/dpkg/native/hooks/x509-name-hash.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { assertSameTrees, treeSnapshot } from "../lab/file-tree.ts";
import { labImage, labImageValue } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap");

let work: string;
let image: Image;

before(async () => {
  work = await (await import("node:fs/promises")).mkdtemp("/var/tmp/suture-native-hooks-");
  const lab = await labImage("bookwormNginx");
  image = await labImageValue(lab);
});
after(() => rm(work, { recursive: true, force: true }));

const sandboxOptions = () => ({ cacheDir: join(work, "layers"), workRoot: join(work, "sandboxes") });

async function run(sb: Sandbox, args: string[]): Promise<string> {
  const r = await sb.run(args, { timeoutMs: 600_000, env: ["LC_ALL=C"] });
  assert.equal(r.exitCode, 0, `${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * A state with work to do, made the same way in both copies: two certificates deselected, links
 * missing (among them one of the two certificates sharing the subject hash 3bde41ac), a dangling
 * link, and local certificates (in a subdirectory, with the characters the script renames, and a
 * duplicate of a shipped one, which rehash skips).
 */
async function perturb(root: string): Promise<void> {
  const conf = join(root, "etc/ca-certificates.conf");
  const text = await readFile(conf, "utf8");
  await writeFile(
    conf,
    text
      .replace(/^mozilla\/GlobalSign_Root_R46\.crt$/m, "!mozilla/GlobalSign_Root_R46.crt")
      .replace(/^mozilla\/ACCVRAIZ1\.crt$/m, "!mozilla/ACCVRAIZ1.crt"),
  );
  const certs = join(root, "etc/ssl/certs");
  for (const name of await readdir(certs))
    if (name.startsWith("Certum") || name === "02265526.0" || name === "3bde41ac.0")
      await rm(join(certs, name));
  await symlink("/nonexistent/cert.crt", join(certs, "dangling.pem"));
  const local = join(root, "usr/local/share/ca-certificates");
  await mkdir(join(local, "sub"), { recursive: true });
  const mozilla = join(root, "usr/share/ca-certificates/mozilla");
  await copyFile(join(mozilla, "Certum_Trusted_Root_CA.crt"), join(local, "sub/my local (ca), x.crt"));
  await copyFile(join(mozilla, "ACCVRAIZ1.crt"), join(local, "zz.crt"));
  // A certificate file without its final newline: the bundle gets one added.
  const isrg = await readFile(join(mozilla, "ISRG_Root_X1.crt"));
  await writeFile(join(local, "isrg-no-newline.crt"), isrg.subarray(0, isrg.length - 1));
}

test("OpenSSL's subject hash: suture's matches the image's `openssl x509 -hash` for every certificate it ships", async () => {
  await withSandbox(image, sandboxOptions(), async (sb) => {
    const listing = await run(sb, [
      "sh",
      "-c",
      'for f in /usr/share/ca-certificates/mozilla/*.crt; do printf "%s %s\\n" "$(openssl x509 -hash -noout -in "$f")" "$f"; done',
    ]);
    const lines = listing.trim().split("\n");
    assert.ok(lines.length > 100, "the image ships Mozilla's roots");
    const wrong: string[] = [];
    for (const line of lines) {
      const [hash, path] = [line.slice(0, 8), line.slice(9)];
      const pem = await readFile(join(sb.mergedDir, path), "latin1");
      const der = Buffer.from(pem.split("-----BEGIN CERTIFICATE-----")[1]!.split("-----END")[0]!, "base64");
      const mine = subjectNameHash(certificateSubject(der));
      if (mine !== hash) wrong.push(`${path}: openssl ${hash}, suture ${mine}`);
    }
    assert.deepEqual(wrong, []);
  });
});

test("update-ca-certificates: the native equivalent leaves /etc/ssl/certs byte-identical to the real script, call after call", async () => {
  await withSandbox(image, sandboxOptions(), async (real) => {
    await withSandbox(image, sandboxOptions(), async (native) => {
      await perturb(real.mergedDir);
      await perturb(native.mergedDir);
      // As the postinst calls it, then as its trigger does, then a fresh rebuild, then after an
      // administrator removed a certificate file whose link (and hash link) must go.
      const calls: string[][] = [["--hooksdir", ""], [], ["--fresh"], ["--hooksdir", ""]];
      for (const [i, args] of calls.entries()) {
        if (i === 3)
          for (const sb of [real, native])
            await rm(join(sb.mergedDir, "usr/local/share/ca-certificates/zz.crt"));
        const stdout = await run(real, ["update-ca-certificates", ...args]);
        const r = await updateCaCertificates(native.mergedDir, args);
        assert.ok(r.done, `native update-ca-certificates ${args.join(" ")}: ${!r.done ? r.unsupported : ""}`);
        assert.match(
          stdout,
          new RegExp(`${r.added} added, ${r.removed} removed`),
          "the same counts as the script",
        );
        const what = `update-ca-certificates ${args.join(" ") || "(no arguments)"}`;
        assertSameTrees(
          await treeSnapshot(real.mergedDir, "/etc/ssl"),
          await treeSnapshot(native.mergedDir, "/etc/ssl"),
          what,
        );
        assertSameTrees(
          await treeSnapshot(real.mergedDir, "/etc/ca-certificates"),
          await treeSnapshot(native.mergedDir, "/etc/ca-certificates"),
          what,
        );
      }
    });
  });
});

test("update-ca-certificates: a hook to run or an argument it does not know is left to the real script, with nothing written", async () => {
  await withSandbox(image, sandboxOptions(), async (sb) => {
    const before = await treeSnapshot(sb.mergedDir, "/etc/ssl");
    await perturb(sb.mergedDir);
    const perturbed = await treeSnapshot(sb.mergedDir, "/etc/ssl");
    assert.notDeepEqual(perturbed, before);
    const hook = join(sb.mergedDir, "etc/ca-certificates/update.d/jks-keystore");
    await writeFile(hook, "#!/bin/sh\ncat >/dev/null\n", { mode: 0o755 });
    const r = await updateCaCertificates(sb.mergedDir, []);
    assert.deepEqual(r, { done: false, unsupported: "hooks in /etc/ca-certificates/update.d" });
    const unknown = await updateCaCertificates(sb.mergedDir, ["--sysroot", "/x"]);
    assert.equal(unknown.done, false);
    assertSameTrees(perturbed, await treeSnapshot(sb.mergedDir, "/etc/ssl"), "an unsupported call");
  });
});

test("stand-ins: while dpkg runs the scripts the program only records its calls; after, the calls are done natively and the program is back, byte for byte", async () => {
  await withSandbox(image, sandboxOptions(), async (real) => {
    await withSandbox(image, sandboxOptions(), async (native) => {
      await perturb(real.mergedDir);
      await perturb(native.mergedDir);
      const program = join(native.mergedDir, "usr/sbin/update-ca-certificates");
      const original = await treeSnapshot(native.mergedDir, "/usr/sbin");
      const standIns = await placeStandIns(native.mergedDir, new Set(["ca-certificates"]));
      assert.match(await readFile(program, "utf8"), /records this call/);
      // What ca-certificates' postinst and its trigger run, through the image's shell.
      await run(native, ["sh", "-c", 'update-ca-certificates --hooksdir "" && update-ca-certificates']);
      await run(real, ["sh", "-c", 'update-ca-certificates --hooksdir "" && update-ca-certificates']);
      const events: ProgressEvent[] = [];
      const outcomes = await standIns.replay(
        async () => assert.fail("every call has a native equivalent"),
        (e) => events.push(e),
      );
      assert.deepEqual(
        outcomes.map((o) => [o.package, o.hook, o.calls, o.ran]),
        [["ca-certificates", "update-ca-certificates", 2, "native"]],
      );
      assert.equal(events.filter((e) => e.type === "hook").length, 1, "a hook event says it ran natively");
      assertSameTrees(
        original,
        await treeSnapshot(native.mergedDir, "/usr/sbin"),
        "the program after the run",
      );
      assertSameTrees(
        await treeSnapshot(real.mergedDir, "/etc/ssl"),
        await treeSnapshot(native.mergedDir, "/etc/ssl"),
        "stand-in",
      );
    });
  });
});

/**
 * An upgrade's state of the selection file: a certificate missing from it, one the package no
 * longer ships, one deselected by the administrator, and a local certificate named in it.
 */
async function perturbSelection(root: string): Promise<void> {
  const conf = join(root, "etc/ca-certificates.conf");
  const text = await readFile(conf, "utf8");
  await writeFile(
    conf,
    `${text
      .replace(/^mozilla\/ISRG_Root_X1\.crt\n/m, "")
      .replace(
        /^mozilla\/GlobalSign_Root_R46\.crt$/m,
        "!mozilla/GlobalSign_Root_R46.crt",
      )}mozilla/Gone_Old_Root_CA.crt\nmy-local.crt\n`,
  );
  const local = join(root, "usr/local/share/ca-certificates");
  await copyFile(join(root, "usr/share/ca-certificates/mozilla/ACCVRAIZ1.crt"), join(local, "my-local.crt"));
}

test("ca-certificates' postinst: with its selection rewrite and update-ca-certificates done natively, /etc and debconf end byte-identical to the real postinst's", async () => {
  const postinst = ["/var/lib/dpkg/info/ca-certificates.postinst", "configure", "20230311"];
  // As dpkg runs it (dpkg-trigger needs to know whose script it is).
  const env = [
    "DPKG_MAINTSCRIPT_PACKAGE=ca-certificates",
    "DPKG_MAINTSCRIPT_NAME=postinst",
    "DEBIAN_FRONTEND=noninteractive",
  ];
  await withSandbox(image, sandboxOptions(), async (real) => {
    await withSandbox(image, sandboxOptions(), async (native) => {
      for (const sb of [real, native]) await perturbSelection(sb.mergedDir);
      const info = await treeSnapshot(native.mergedDir, "/var/lib/dpkg/info");
      const standIns = await placeStandIns(native.mergedDir, new Set(["ca-certificates"]));
      assert.match(
        await readFile(join(native.mergedDir, postinst[0]!), "utf8"),
        /--suture-ca-selection/,
        "the postinst's selection loop is replaced by the recorder",
      );
      for (const sb of [real, native]) {
        const r = await sb.run(postinst, { env, timeoutMs: 900_000 });
        assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
      }
      const outcomes = await standIns.replay(
        async () => assert.fail("every call has a native equivalent"),
        () => {},
      );
      // The config script (run by the postinst's confmodule) has its loop precomputed, too.
      assert.deepEqual(
        outcomes.map((o) => [o.hook, o.calls, o.ran]),
        [
          ["config certificate loop", 1, "native"],
          ["update-ca-certificates", 2, "native"],
        ],
      );
      assert.match(outcomes[1]!.detail, /^selection rewritten; \d+ added, \d+ removed$/);
      assertSameTrees(
        info,
        await treeSnapshot(native.mergedDir, "/var/lib/dpkg/info"),
        "the scripts after the run",
      );
      for (const dir of ["/etc", "/var/cache/debconf", "/usr/local/share/ca-certificates"])
        assertSameTrees(
          await treeSnapshot(real.mergedDir, dir),
          await treeSnapshot(native.mergedDir, dir),
          dir,
        );
    });
  });
});

test("stand-ins: a program text the table does not know is not replaced (it runs for real)", async () => {
  await withSandbox(image, sandboxOptions(), async (sb) => {
    await appendFile(
      join(sb.mergedDir, "usr/sbin/update-ca-certificates"),
      "# changed by the administrator\n",
    );
    const before = await treeSnapshot(sb.mergedDir, "/usr/sbin");
    const standIns = await placeStandIns(sb.mergedDir, new Set(["ca-certificates"]));
    // ldconfig's stand-in (any package being configured) is placed; update-ca-certificates' is not.
    const during = await treeSnapshot(sb.mergedDir, "/usr/sbin");
    for (const path of ["/usr/sbin/ldconfig", "/usr/sbin/ldconfig.suture-real"]) during.delete(path);
    const unchanged = new Map(before);
    unchanged.delete("/usr/sbin/ldconfig");
    assertSameTrees(unchanged, during, "an unknown program text");
    assert.deepEqual(
      await standIns.replay(
        async () => {},
        () => {},
      ),
      [],
    );
    assertSameTrees(before, await treeSnapshot(sb.mergedDir, "/usr/sbin"), "after the run");
  });
});
