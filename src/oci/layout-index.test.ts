import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { layoutTags, selectFromLayoutIndex } from "./layout-index.ts";
import type { Descriptor, Index } from "./manifest.ts";
import { MediaType } from "./media-types.ts";

const d = (n: string, tag?: string, extra: Partial<Descriptor> = {}): Descriptor => ({
  mediaType: MediaType.ociManifest,
  digest: `sha256:${n.repeat(64)}`,
  size: 1,
  ...(tag ? { annotations: { "org.opencontainers.image.ref.name": tag } } : {}),
  ...extra,
});
const none = async () => undefined;

test("selects by ref.name, the only entry, or names the tags there are", async () => {
  const index: Index = { schemaVersion: 2, manifests: [d("1", "a"), d("2", "b")] };
  assert.deepEqual(layoutTags(index), ["a", "b"]);
  assert.deepEqual(await selectFromLayoutIndex(index, "b", none, "oci:x"), {
    kind: "descriptor",
    descriptor: d("2", "b"),
  });
  await assert.rejects(
    selectFromLayoutIndex(index, "c", none, "oci:x"),
    (e) => isSutureError(e, "NOT_FOUND") && /a, b/.test(e.message),
  );
  await assert.rejects(selectFromLayoutIndex(index, undefined, none, "oci:x"), (e) =>
    isSutureError(e, "INVALID_REFERENCE"),
  );
  const single: Index = { schemaVersion: 2, manifests: [d("3")] };
  assert.deepEqual(await selectFromLayoutIndex(single, undefined, none, "oci:x"), {
    kind: "descriptor",
    descriptor: d("3"),
  });
  await assert.rejects(
    selectFromLayoutIndex({ schemaVersion: 2, manifests: [] }, undefined, none, "oci:x"),
    (e) => isSutureError(e, "NOT_FOUND"),
  );
});

test("untagged platform manifests make index.json itself the image; nested indexes are searched", async () => {
  const platforms: Index = {
    schemaVersion: 2,
    manifests: [
      d("1", undefined, { platform: { os: "linux", architecture: "amd64" } }),
      d("2", undefined, { platform: { os: "linux", architecture: "arm64" } }),
    ],
  };
  assert.deepEqual(await selectFromLayoutIndex(platforms, undefined, none, "oci:x"), { kind: "index" });
  const nested: Index = {
    schemaVersion: 2,
    manifests: [d("4", undefined, { mediaType: MediaType.ociIndex })],
  };
  const inner: Index = { schemaVersion: 2, manifests: [d("5", "deep")] };
  const load = async (x: Descriptor) => (x.digest === d("4").digest ? inner : undefined);
  assert.deepEqual(await selectFromLayoutIndex(nested, "deep", load, "oci:x"), {
    kind: "descriptor",
    descriptor: d("5", "deep"),
  });
});
