/**
 * Differential tests of the native ldconfig (src/patch/engines/dpkg/native/hooks/ld-so-cache.ts):
 * on the lab's bookwormNginx image (amd64) and, when the lab has it cached, bookwormMinbaseArm64
 * (run under QEMU), the image's own `/sbin/ldconfig` runs in runc over one copy (the oracle) and
 * the native one over another, from the same starting state; `/etc/ld.so.cache` must be
 * byte-identical and the library directories must hold the same links and files. The state is
 * made to give ldconfig work: soname links missing or stale, a newer build beside the old one, a
 * configured directory with its own glibc-hwcaps subdirectories (x86-64-v2/v3 copies whose ISA
 * level the cache records), an include glob, linker scripts and junk named like libraries.
 * Also: the stand-in records libc-bin's trigger and replays it natively; a tree it cannot
 * reproduce is left to the real program. Needs root, runc and the lab images. About a minute.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import type { Image } from "../../src/image/image.ts";
import { runLdconfig } from "../../src/patch/engines/dpkg/native/hooks/ld-so-cache.ts";
import { NATIVE_TRIGGERS, placeStandIns } from "../../src/patch/engines/dpkg/native/hooks/stand-ins.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { labCacheDir, labImage, labImageValue, labRecipeHash } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap");

let work: string;
let amd64: Image;
/** The arm64 lab image, only when the lab already has it (it is not built for this test). */
let arm64: Image | undefined;

before(async () => {
  work = await mkdtemp("/var/tmp/suture-native-ldconfig-");
  const lab = await labImage("bookwormNginx");
  amd64 = await labImageValue(lab);
  const armEntry = join(
    labCacheDir(),
    `bookwormMinbaseArm64-${(await labRecipeHash("bookwormMinbaseArm64")).slice(0, 16)}`,
  );
  const binfmt = await readFile("/proc/sys/fs/binfmt_misc/qemu-aarch64", "utf8").catch(() => "");
  if ((await lstat(join(armEntry, "lab-image.json")).catch(() => undefined)) && /flags:.*F/.test(binfmt)) {
    const arm = await labImage("bookwormMinbaseArm64");
    arm64 = await labImageValue(arm, "arm64");
  }
});
after(() => rm(work, { recursive: true, force: true }));

const sandboxOptions = () => ({ cacheDir: join(work, "layers"), workRoot: join(work, "sandboxes") });

async function run(sb: Sandbox, args: string[], env: string[] = []): Promise<string> {
  const r = await sb.run(args, { timeoutMs: 600_000, env: ["LC_ALL=C", ...env] });
  assert.equal(r.exitCode, 0, `${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Entries of `dir` (below it too when `deep`): link targets, file sizes and modes, directories. */
async function listing(root: string, dir: string, deep: boolean): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    const names = await readdir(join(root, rel)).catch(() => [] as string[]);
    for (const name of names) {
      const path = `${rel}/${name}`;
      const st = await lstat(join(root, path));
      if (st.isSymbolicLink()) out.set(path, `link ${await readlink(join(root, path))}`);
      else if (st.isDirectory()) {
        out.set(path, "dir");
        if (deep) await walk(path);
      } else out.set(path, `file ${(st.mode & 0o7777).toString(8)} ${st.size}`);
    }
  };
  await walk(dir);
  return out;
}

async function assertSameResult(real: string, native: string, triplet: string, what: string) {
  const [a, b] = [
    await readFile(join(real, "etc/ld.so.cache")),
    await readFile(join(native, "etc/ld.so.cache")),
  ];
  let at = 0;
  while (at < Math.min(a.length, b.length) && a[at] === b[at]) at++;
  assert.ok(
    a.equals(b),
    `${what}: /etc/ld.so.cache differs (real ${a.length} bytes, native ${b.length}, first difference at ${at})`,
  );
  assert.equal((await lstat(join(native, "etc/ld.so.cache"))).mode & 0o7777, 0o644);
  const diff: string[] = [];
  for (const [dir, deep] of [
    [`/usr/lib/${triplet}`, false],
    ["/opt", true],
    ["/srv", true],
    ["/etc/ld.so.conf.d", true],
  ] as const) {
    const [x, y] = [await listing(real, dir, deep), await listing(native, dir, deep)];
    for (const path of new Set([...x.keys(), ...y.keys()]))
      if (x.get(path) !== y.get(path))
        diff.push(`${path}: real ${x.get(path) ?? "absent"} / native ${y.get(path) ?? "absent"}`);
  }
  assert.deepEqual(diff, [], `${what}: the library directories differ:\n${diff.join("\n")}`);
}

/** `lib` with the x86 ISA level it needs set to `bit` (1 = x86-64-v2, 2 = v3), when it says one. */
async function withIsaLevel(from: string, to: string, bit: number) {
  const bytes = await readFile(from);
  // GNU_PROPERTY_X86_ISA_1_NEEDED (0xc0008002), 4 bytes of data.
  const at = bytes.indexOf(Buffer.from([0x02, 0x80, 0x00, 0xc0, 0x04, 0x00, 0x00, 0x00]));
  if (at >= 0) bytes.writeUInt32LE((1 << bit) | 1, at + 8);
  await writeFile(to, bytes, { mode: 0o644 });
}

/** The state described at the top, made the same way in both copies. */
async function perturb(root: string, triplet: string): Promise<void> {
  const lib = join(root, "usr/lib", triplet);
  // A soname link gone, a newer build beside the one the link names, dangling links.
  await rm(join(lib, "libz.so.1"));
  const lzma = await readlink(join(lib, "liblzma.so.5"));
  await copyFile(join(lib, lzma), join(lib, "liblzma.so.5.10.0"));
  await symlink("libgone.so.3.0", join(lib, "libgone.so.3"));
  await symlink("libgone.so.3", join(lib, "libgone.so"));
  // A file where a soname link belongs ("is not a symbolic link": left alone).
  await rm(join(lib, "libattr.so.1"));
  await writeFile(join(lib, "libattr.so.1"), "not a library\n");

  // A directory of its own, configured with comments, slashes and an include glob.
  const conf = join(root, "etc/ld.so.conf.d");
  await writeFile(
    join(conf, "zz-app.conf"),
    "# an application's libraries\n/opt/app/lib  # the first\n\t/opt/app/lib/\n/opt/missing\ninclude app.d/*.conf\nhwcap 0 nosegneg\n",
  );
  await mkdir(join(conf, "app.d"));
  await writeFile(join(conf, "app.d/b.conf"), "/srv/lib2\n");
  await writeFile(join(conf, "app.d/a.conf"), "/srv/lib1\n");
  await writeFile(join(conf, "app.d/.hidden.conf"), "/srv/hidden\n");

  const app = join(root, "opt/app/lib");
  await mkdir(app, { recursive: true });
  await copyFile(join(lib, lzma), join(app, lzma));
  await symlink(lzma, join(app, "liblzma.so"));
  await copyFile(join(lib, await readlink(join(lib, "libmd.so.0"))), join(app, "libzz.so.1"));
  await writeFile(join(app, "libfoo.so"), "/* GNU ld script */\nGROUP ( libfoo.so.1 )\n");
  await writeFile(join(app, "libjunk.so.2"), "#!/bin/sh\necho not a library\n".repeat(8));
  const anl = join(lib, "libanl.so.1");
  await copyFile(anl, join(app, "libanl.so.1"));
  for (const [name, bit] of [
    ["x86-64-v3", 2],
    ["x86-64-v2", 1],
  ] as const) {
    await mkdir(join(app, "glibc-hwcaps", name), { recursive: true });
    await withIsaLevel(anl, join(app, "glibc-hwcaps", name, "libanl.so.1"), bit);
  }
  await mkdir(join(app, "glibc-hwcaps/x86-64-v4"));
  await mkdir(join(app, "glibc-hwcaps/.hidden"));
  await writeFile(join(app, "glibc-hwcaps/README"), "a file, not a directory\n");

  // An absolute link into the system directory, named by its soname; and one that is not.
  const srv = join(root, "srv/lib1");
  await mkdir(srv, { recursive: true });
  await symlink(`/usr/lib/${triplet}/${lzma}`, join(srv, "liblzma.so.5"));
  await symlink(`/usr/lib/${triplet}/${lzma}`, join(srv, "libother.so.7"));
  // The same glibc-hwcaps directories again, through a link: scanned once.
  await symlink("/opt/app/lib/glibc-hwcaps", join(srv, "glibc-hwcaps"));
  await mkdir(join(root, "srv/lib2/glibc-hwcaps/extra"), { recursive: true });
}

async function differential(image: Image, triplet: string, what: string) {
  await withSandbox(image, sandboxOptions(), async (real) => {
    await withSandbox(image, sandboxOptions(), async (native) => {
      // As the image is.
      await run(real, ["/sbin/ldconfig"]);
      const plain = await runLdconfig(native.mergedDir, []);
      assert.ok(plain.done, `native ldconfig: ${!plain.done ? plain.unsupported : ""}`);
      await assertSameResult(real.mergedDir, native.mergedDir, triplet, `${what}, as built`);
      // With work to do.
      for (const sb of [real, native]) await perturb(sb.mergedDir, triplet);
      await run(real, ["/sbin/ldconfig", "-r", "/"]);
      const r = await runLdconfig(native.mergedDir, ["-r", "/"]);
      assert.ok(r.done, `native ldconfig: ${!r.done ? r.unsupported : ""}`);
      assert.ok(r.linksMade >= 3 && r.linksRemoved === 1, JSON.stringify(r));
      await assertSameResult(real.mergedDir, native.mergedDir, triplet, `${what}, perturbed`);
      const printed = await run(real, ["/sbin/ldconfig", "-p"]);
      assert.match(
        printed,
        /libanl\.so\.1 \(libc6,[^)]*hwcap: "x86-64-v3"\) => \/opt\/app\/lib\/glibc-hwcaps\/x86-64-v3\/libanl\.so\.1/,
      );
      // And again over its own result: nothing left to change.
      await run(real, ["/sbin/ldconfig"]);
      const again = await runLdconfig(native.mergedDir, []);
      assert.ok(again.done && again.linksMade === 0 && again.linksRemoved === 0, JSON.stringify(again));
      await assertSameResult(real.mergedDir, native.mergedDir, triplet, `${what}, second run`);
    });
  });
}

test("ldconfig (amd64): the native cache and links are byte-identical to the image's ldconfig, as built and with work to do", async () => {
  await differential(amd64, "x86_64-linux-gnu", "amd64");
});

test("ldconfig (arm64, under QEMU): the native cache and links are byte-identical to the image's ldconfig", async (t) => {
  if (!arm64) return t.skip("the lab has no bookwormMinbaseArm64 image cached, or QEMU's binfmt is missing");
  await differential(arm64, "aarch64-linux-gnu", "arm64");
});

test("ldconfig stand-in: libc-bin's trigger only records its call while dpkg would run it; the call is then done natively, byte-identical", async () => {
  const postinst = ["/var/lib/dpkg/info/libc-bin.postinst", "triggered", "ldconfig"];
  const env = ["DPKG_MAINTSCRIPT_PACKAGE=libc-bin", "DPKG_MAINTSCRIPT_NAME=postinst"];
  await withSandbox(amd64, sandboxOptions(), async (real) => {
    await withSandbox(amd64, sandboxOptions(), async (native) => {
      for (const sb of [real, native]) await perturb(sb.mergedDir, "x86_64-linux-gnu");
      // The postinst whose `triggered` branch is only that call (what scriptsNeedRuntime relies on).
      const text = await readFile(join(native.mergedDir, postinst[0]!));
      assert.ok(
        NATIVE_TRIGGERS.get("ldconfig")!.postinst.has(createHash("sha256").update(text).digest("hex")),
      );
      const program = join(native.mergedDir, "usr/sbin/ldconfig");
      const original = createHash("sha256")
        .update(await readFile(program))
        .digest("hex");
      // Any package being configured may activate the trigger: libc-bin itself is not among them.
      const standIns = await placeStandIns(native.mergedDir, new Set(["libssl3"]));
      assert.match(await readFile(program, "utf8"), /records this call/);
      await run(native, postinst, env);
      await run(real, postinst, env);
      // A call whose output the script would use at once runs the real program, unrecorded.
      assert.match(await run(native, ["ldconfig", "-p"]), /libs found in cache/);
      const events: ProgressEvent[] = [];
      const outcomes = await standIns.replay(
        async () => assert.fail("the call has a native equivalent"),
        (e) => events.push(e),
      );
      assert.deepEqual(
        outcomes.map((o) => [o.package, o.hook, o.calls, o.ran]),
        [["libc-bin", "ldconfig", 1, "native"]],
      );
      assert.match(outcomes[0]!.detail, /^\d+ libraries cached, \d+ links made, 1 removed$/);
      assert.equal(events.filter((e) => e.type === "hook").length, 1);
      assert.equal(
        createHash("sha256")
          .update(await readFile(program))
          .digest("hex"),
        original,
      );
      await assertSameResult(real.mergedDir, native.mergedDir, "x86_64-linux-gnu", "stand-in");
    });
  });
});

test("ldconfig: a tree it does not reproduce (a legacy hwcap subdirectory, a 32-bit library) is left to the real program, with nothing written", async () => {
  await withSandbox(amd64, sandboxOptions(), async (sb) => {
    const root = sb.mergedDir;
    const lib = join(root, "usr/lib/x86_64-linux-gnu");
    const before = await readFile(join(root, "etc/ld.so.cache"));
    await rm(join(lib, "libz.so.1"));
    await mkdir(join(lib, "tls"));
    const listed = await listing(root, "/usr/lib/x86_64-linux-gnu", false);
    const r = await runLdconfig(root, []);
    assert.deepEqual(r, {
      done: false,
      unsupported: "/lib/x86_64-linux-gnu/tls (a hwcap subdirectory or a link in a glibc-hwcaps directory)",
    });
    await rm(join(lib, "tls"), { recursive: true });
    // An i386 ELF shared object (a copy of ldconfig's own header would not do: build one by hand).
    const elf32 = Buffer.alloc(64);
    elf32.write("\x7fELF", 0, "latin1");
    elf32[4] = 1; // ELFCLASS32
    elf32[5] = 1;
    elf32.writeUInt16LE(3, 16); // ET_DYN
    elf32.writeUInt16LE(3, 18); // EM_386
    await writeFile(join(lib, "libthirtytwo.so.1"), elf32);
    const r32 = await runLdconfig(root, []);
    assert.equal(r32.done, false);
    assert.match(!r32.done ? r32.unsupported : "", /libthirtytwo\.so\.1: a 32-bit library/);
    await rm(join(lib, "libthirtytwo.so.1"));
    assert.deepEqual(
      await listing(root, "/usr/lib/x86_64-linux-gnu", false),
      new Map([...listed].filter(([p]) => !p.endsWith("/tls"))),
    );
    assert.ok((await readFile(join(root, "etc/ld.so.cache"))).equals(before), "the cache is untouched");
    assert.deepEqual(await runLdconfig(root, ["-X"]), { done: false, unsupported: 'arguments ["-X"]' });
  });
});
