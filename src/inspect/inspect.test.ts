import assert from "node:assert/strict";
import { test } from "node:test";
import { buildRandomImage, memorySource } from "../../test/lab/random-image.ts";
import { renderInspect } from "../cli/commands/inspect.ts";
import { sha256Digest } from "../image/digest.ts";
import { inspectSource } from "./inspect.ts";

test("inspect shows the config's Env, WorkingDir and ExposedPorts", async () => {
  const base = await buildRandomImage({ layers: 1 });
  // The same image with a config that sets what a user checks before running it.
  const config = JSON.parse(base.config.toString("utf8"));
  config.config = {
    ...config.config,
    Env: ["PATH=/usr/bin:/bin", "APP_MODE=production"],
    WorkingDir: "/srv/app",
    ExposedPorts: { "8443/tcp": {}, "80/tcp": {} },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const manifest = JSON.parse(Buffer.from(base.manifest.bytes).toString("utf8"));
  manifest.config = { ...manifest.config, digest: sha256Digest(configBytes), size: configBytes.length };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const blobs = new Map(base.blobs);
  blobs.set(manifest.config.digest, configBytes);
  const source = memorySource(
    "oci:app:1",
    { bytes: manifestBytes, mediaType: base.manifest.mediaType, digest: sha256Digest(manifestBytes) },
    blobs,
  );
  const result = await inspectSource(source, { noLayers: true });
  assert.deepEqual(result.images[0]!.config.exposedPorts, ["80/tcp", "8443/tcp"]);
  const text = renderInspect(result);
  assert.match(text, /^ {2}WorkingDir: +\/srv\/app$/m);
  assert.match(text, /^ {2}ExposedPorts: +80\/tcp, 8443\/tcp$/m);
  assert.match(text, /^ {2}Env:\n {4}PATH=\/usr\/bin:\/bin\n {4}APP_MODE=production$/m);
});
