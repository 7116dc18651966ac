/**
 * The sandbox for real: the lab's Debian bookworm image (built by mmdebstrap + umoci, read through
 * the OCI layout transport), its layers in the cache, an overlay, and runc running the image's own
 * sh and apt-get against the real Debian archive (through the lab's recording mirror). Needs root and
 * runc, and network to deb.debian.org unless the mirror recorded what apt-get update fetches.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import zlib from "node:zlib";
import { isSutureError } from "../../src/errors/errors.ts";
import { sha256Digest } from "../../src/image/digest.ts";
import { type Image, openImage } from "../../src/image/image.ts";
import type { ImageSource } from "../../src/image/source.ts";
import { editImage } from "../../src/mutate/mutate.ts";
import { MediaType } from "../../src/oci/media-types.ts";
import type { EngineSandbox } from "../../src/patch/engines/engine.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { pendingSandboxCleanups, runSandboxCleanups } from "../../src/sandbox/cleanup.ts";
import { isMountPoint } from "../../src/sandbox/overlay.ts";
import { withSandbox } from "../../src/sandbox/sandbox.ts";
import { openLayoutSource } from "../../src/transports/layout/layout.ts";
import { archiveMirror, archiveProxyEnv } from "../lab/archive-mirror.ts";
import { type LabImage, labImage } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";
import { listTree, snapshot, tarOf } from "./sandbox-fixtures.ts";

const { after, before, describe, test } = await requiring("root", "runc", "network", "tool:mmdebstrap");

let lab: LabImage;
let source: ImageSource;
let image: Image;
let work: string;
let cacheDir: string;

before(async () => {
  lab = await labImage("bookwormMinbase");
  source = await openLayoutSource(lab.layoutDir, lab.tag, {});
  image = await openImage(source, { os: "linux", architecture: "amd64" });
  // On the same disk as the layer cache, never on tmpfs or overlay (the upper dir lives here).
  work = mkdtempSync("/var/tmp/suture-sandbox-runc-");
  cacheDir = join(work, "cache");
});
after(async () => {
  await source?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function sandboxOptions(extra: { progress?: (e: ProgressEvent) => void } = {}) {
  return { cacheDir, workRoot: join(work, "sandboxes"), ...extra };
}

/** runc containers this process started and that still exist. */
function ourContainers(): string[] {
  const out = execFileSync("runc", ["list", "-q"], { encoding: "utf8" });
  return out.split("\n").filter((id) => id.startsWith(`suture-${process.pid}-`));
}

function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .filter((l) => l.split(" ")[1]?.startsWith(dir));
}

describe("runInSandbox with runc over the lab's Debian image", () => {
  test("runs the image's own shell as root and streams its output", async () => {
    const events: ProgressEvent[] = [];
    const lines: string[] = [];
    await withSandbox(image, sandboxOptions({ progress: (e) => events.push(e) }), async (s) => {
      const forApt: EngineSandbox = s; // what the apt engine drives
      assert.equal(forApt.mergedDir, s.mergedDir);
      const r = await s.run(["sh", "-c", "echo hi; id -u; cat /etc/debian_version"], {
        onOutput: (line, stream) => lines.push(`${stream}:${line}`),
      });
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout, `hi\n0\n${lab.debianVersion}\n`);
      assert.deepEqual(lines, ["stdout:hi", "stdout:0", `stdout:${lab.debianVersion}`]);
      const piped = await s.run(["sh", "-c", "tr a-z A-Z"], { input: "piped in\n" });
      assert.equal(piped.stdout, "PIPED IN\n");
      const failed = await s.run(["sh", "-c", "echo broken >&2; exit 3"]);
      assert.equal(failed.exitCode, 3);
      assert.equal(failed.stderr, "broken\n");
      // Nothing the runtime needs (mount points, /dev, /tmp) is left behind in the upper dir.
      assert.deepEqual(listTree(s.upperDir), []);
    });
    assert.ok(events.some((e) => e.type === "command-output" && e.line === "hi" && e.stream === "stdout"));
    assert.deepEqual(ourContainers(), []);
  });

  test("apt-get update reaches the Debian archive; lists land in the upper dir, lower dirs untouched", async () => {
    await withSandbox(image, sandboxOptions(), async (s) => {
      const before = s.lowerDirs.map((d) => snapshot(d));
      // Through the lab's recording mirror, as the sandbox engine's apt gets the host's proxy.
      const proxy = Object.entries(archiveProxyEnv(await archiveMirror())).map(([k, v]) => `${k}=${v}`);
      const r = await s.run(["apt-get", "update"], { env: ["LC_ALL=C", ...proxy], timeoutMs: 180_000 });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /deb\.debian\.org/);
      const lists = readdirSync(join(s.upperDir, "var/lib/apt/lists"));
      assert.ok(
        lists.some((f) => /^deb\.debian\.org_debian_dists_bookworm_main_binary-amd64_Packages/.test(f)),
        `Packages index in the upper dir: ${lists.join(", ")}`,
      );
      assert.ok(lists.some((f) => f.includes("InRelease")));
      assert.deepEqual(
        s.lowerDirs.map((d) => snapshot(d)),
        before,
        "the cached layers did not change",
      );
      const top = listTree(s.upperDir).filter((p) => !p.includes("/"));
      assert.deepEqual(top, ["var"], "apt-get update only writes below /var");
    });
  });

  test("an image without /etc/resolv.conf still resolves names; the mount point is not left in the upper dir", async () => {
    const gz = zlib.gzipSync(await tarOf([{ name: "etc/.wh.resolv.conf", content: "" }]));
    const file = join(work, "no-resolv.tar.gz");
    writeFileSync(file, gz);
    const noResolv = editImage(image, {
      addLayers: [
        {
          descriptor: { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(gz), size: gz.length },
          diffID: sha256Digest(zlib.gunzipSync(gz)),
          path: file,
        },
      ],
    });
    await withSandbox(noResolv, sandboxOptions(), async (s) => {
      const etcBefore = statSync(join(s.mergedDir, "etc"), { bigint: true }).mtimeNs;
      const r = await s.run(["getent", "hosts", "deb.debian.org"]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /deb\.debian\.org/);
      // runc had to create /etc/resolv.conf to mount on; we removed it again and restored /etc's
      // mtime, so the copied-up etc/ is metadata-identical to the image's.
      assert.deepEqual(listTree(s.upperDir), ["etc"]);
      assert.equal(statSync(join(s.upperDir, "etc"), { bigint: true }).mtimeNs, etcBefore);
    });
  });

  test("a timeout kills the command within seconds and leaves no container and no mount", async () => {
    let merged = "";
    await withSandbox(image, sandboxOptions(), async (s) => {
      merged = s.mergedDir;
      const started = performance.now();
      await assert.rejects(s.run(["sleep", "100"], { timeoutMs: 1000 }), (e: unknown) => {
        assert.ok(isSutureError(e, "TIMEOUT"), String(e));
        assert.match(e.message, /sleep 100/);
        return true;
      });
      const elapsed = performance.now() - started;
      assert.ok(elapsed < 4000, `killed after ${Math.round(elapsed)} ms`);
      assert.deepEqual(ourContainers(), []);
      // The sandbox stays usable after a timeout.
      assert.equal((await s.run(["true"])).exitCode, 0);
    });
    assert.deepEqual(ourContainers(), []);
    assert.ok(!(await isMountPoint(merged)));
    assert.deepEqual(mountsUnder(work), []);
    assert.deepEqual(readdirSync(join(work, "sandboxes")), []);
  });

  test("aborting, or a signal handler running the cleanups, kills the command (CANCELLED)", async () => {
    await withSandbox(image, sandboxOptions(), async (s) => {
      const ac = new AbortController();
      // Abort once the command runs and ignores TERM and INT (it says so), not after a fixed delay
      // that may end before runc has even started it.
      await assert.rejects(
        s.run(["sh", "-c", "trap '' TERM INT; echo ready; sleep 100"], {
          signal: ac.signal,
          onOutput: (line) => line === "ready" && ac.abort(),
        }),
        (e: unknown) => isSutureError(e, "CANCELLED"),
      );
      assert.ok(ac.signal.aborted, "the command ran until it was aborted");
      assert.deepEqual(ourContainers(), []);
    });
    let merged = "";
    await assert.rejects(
      withSandbox(image, sandboxOptions(), async (s) => {
        merged = s.mergedDir;
        let started!: () => void;
        const ready = new Promise<void>((r) => {
          started = r;
        });
        const running = s.run(["sh", "-c", "echo ready; exec sleep 100"], {
          onOutput: (line) => line === "ready" && started(),
        });
        const outcome = running.then(
          () => undefined,
          (e: unknown) => e,
        );
        // The container runs (it has printed), so it is registered; a fixed delay could end first.
        await Promise.race([ready, outcome]);
        assert.equal(pendingSandboxCleanups().length, 2, "the sandbox and its container are registered");
        // What a CLI's SIGINT handler does.
        assert.deepEqual(await runSandboxCleanups(), []);
        assert.ok(!(await isMountPoint(s.mergedDir)), "unmounted by the cleanup");
        throw await outcome;
      }),
      (e: unknown) => isSutureError(e, "CANCELLED"),
    );
    assert.deepEqual(ourContainers(), []);
    assert.ok(!(await isMountPoint(merged)));
    assert.deepEqual(mountsUnder(work), []);
  });
});
