import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import {
  assertNoUnhandledRejections,
  fuzzParameters,
  mutatedBytes,
  parsesOrFailsCleanlyAsync,
} from "../../test/fuzz/fuzz.ts";
import { encodeTarHeader, TAR_END, tarPadding } from "../archive/tar/write.ts";
import { SutureError } from "../errors/errors.ts";
import { readImageFiles } from "./files.ts";
import type { Image } from "./image.ts";

// Property: OS detection reads /etc/os-release and the dpkg status straight out of the image's
// layers; a corrupt or hostile layer yields the files it holds or one line of INVALID_ARCHIVE,
// never a tar library's or zlib's own exception.

function file(name: string, content: string): Buffer {
  const body = Buffer.from(content);
  const header = encodeTarHeader({
    path: name,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 0,
    size: body.length,
  });
  return Buffer.concat([header, body, tarPadding(body.length)]);
}

const LAYER = Buffer.concat([
  encodeTarHeader({ path: "etc", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: 0 }),
  encodeTarHeader({
    path: "etc/os-release",
    type: "symlink",
    linkname: "../usr/lib/os-release",
    mode: 0o777,
    uid: 0,
    gid: 0,
    mtime: 0,
  }),
  file("usr/lib/os-release", "ID=debian\nVERSION_ID=12\n"),
  file("var/lib/dpkg/status", "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n"),
  file("var/lib/dpkg/.wh.old", ""),
  TAR_END,
]);

/** An image whose single layer is `bytes`: the seam readImageFiles reads blobs through. */
function imageOf(bytes: Buffer): Image {
  const layer = {
    mediaType: "application/vnd.oci.image.layer.v1.tar",
    digest: `sha256:${"0".repeat(64)}`,
    size: bytes.length,
  };
  return {
    parsed: { layers: [layer] },
    blobs: { blob: async () => Readable.from([bytes]) },
  } as unknown as Image;
}

const wanted = (p: string) => ["/etc/os-release", "/usr/lib/os-release", "/var/lib/dpkg/status"].includes(p);

test("the seed layer yields its files (so mutations start from a real layer)", async () => {
  const files = await readImageFiles(imageOf(LAYER), wanted);
  assert.equal(files.get("/etc/os-release")?.toString(), "ID=debian\nVERSION_ID=12\n");
  assert.ok(files.get("/var/lib/dpkg/status"));
});

test("readImageFiles: mutated plain and gzip layers yield files or one-line INVALID_ARCHIVE", async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(mutatedBytes(LAYER), mutatedBytes(gzipSync(LAYER), 2)), async (bytes) => {
      await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE"], () => readImageFiles(imageOf(bytes), wanted));
      await assertNoUnhandledRejections();
    }),
    fuzzParameters(120),
  );
});

test("regression: a layer with a corrupt tar header is INVALID_ARCHIVE, not a bare decoder error", async () => {
  const corrupt = Buffer.from(LAYER);
  corrupt.write("x", 148, "latin1"); // the checksum field
  await assert.rejects(
    readImageFiles(imageOf(corrupt), wanted),
    (e: Error) => e instanceof SutureError && e.code === "INVALID_ARCHIVE",
  );
});
