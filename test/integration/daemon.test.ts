import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { isSutureError } from "../../src/errors/errors.ts";
import { copyImage } from "../../src/image/copy.ts";
import { sha256Digest } from "../../src/image/digest.ts";
import { openImage, readAll } from "../../src/image/image.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { parseReference } from "../../src/ref/reference.ts";
import { parseTransportReference } from "../../src/ref/transport.ts";
import {
  daemonAvailable,
  EngineClient,
  openDaemonSink,
  openDaemonSource,
} from "../../src/transports/daemon/daemon.ts";
import { openSink, openSource } from "../../src/transports/index.ts";
import { openLayoutSink } from "../../src/transports/layout/layout.ts";
import { type LabDockerd, startDockerd } from "../lab/dockerd.ts";
import { buildIndex, buildRandomImage, memorySource } from "../lab/random-image.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, describe, test } = await requiring("root", "dockerd", "tool:skopeo");

const run = promisify(execFile);
const amd64 = { os: "linux", architecture: "amd64" };

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("docker-daemon transport", () => {
  let dockerd: LabDockerd;
  let scratch: string;
  const docker = (...args: string[]) => run("docker", args, { env: dockerd.env, maxBuffer: 64 << 20 });

  before(async () => {
    dockerd = await startDockerd();
    scratch = await mkdtemp(join(tmpdir(), "suture-daemon-test-"));
  });
  after(async () => {
    await dockerd?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  test("an unreachable daemon is a DAEMON error naming the socket and the fix", async () => {
    const socket = join(scratch, "no-dockerd.sock");
    const options = { dockerHost: `unix://${socket}` };
    assert.equal(await daemonAvailable(options), false);
    for (const open of [
      () => openDaemonSource(parseReference("alpine:3"), options),
      () => openDaemonSink(parseReference("alpine:patched"), options),
    ]) {
      await assert.rejects(open(), (e) => {
        assert.ok(isSutureError(e, "DAEMON"));
        assert.ok(e.message.includes(socket), e.message);
        assert.match(e.message, /is dockerd running\?.*DOCKER_HOST/);
        return true;
      });
    }
    const port = await closedPort();
    await assert.rejects(
      openDaemonSource(parseReference("alpine:3"), { dockerHost: `tcp://127.0.0.1:${port}` }),
      (e) => isSutureError(e, "DAEMON") && e.message.includes(`tcp://127.0.0.1:${port}`),
    );
    // DOCKER_HOST is honoured when no option is given.
    const saved = process.env.DOCKER_HOST;
    process.env.DOCKER_HOST = `unix://${socket}`;
    try {
      assert.equal(await daemonAvailable(), false);
    } finally {
      if (saved === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = saved;
    }
  });

  test("the API version is negotiated down to the daemon's", async () => {
    assert.equal(await daemonAvailable({ dockerHost: dockerd.host }), true);
    const client = await EngineClient.connect({ dockerHost: dockerd.host });
    assert.equal(client.apiVersion, dockerd.apiVersion);
  });

  test("sink load and source save round-trip an image through dockerd", async () => {
    const image = await buildRandomImage({ layers: 3 });
    const events: ProgressEvent[] = [];
    const options = {
      dockerHost: dockerd.host,
      tmpDir: scratch,
      progress: (e: ProgressEvent) => events.push(e),
    };
    const sink = await openSink(parseTransportReference("docker-daemon:suture/roundtrip:v1"), options);
    await copyImage(memorySource("memory", image.manifest, image.blobs), sink);
    assert.ok(events.some((e) => e.type === "info" && /Loaded image/.test(e.message)));

    // The docker CLI sees it with the right image ID (the config digest) and layers.
    const inspect = JSON.parse((await docker("image", "inspect", "suture/roundtrip:v1")).stdout)[0];
    assert.equal(inspect.Id, image.configDigest);
    assert.deepEqual(inspect.RootFS.Layers, image.diffIds);

    const source = await openSource(parseTransportReference("docker-daemon:suture/roundtrip:v1"), options);
    const back = await openImage(source, amd64);
    assert.deepEqual(Buffer.from(back.rawConfig), image.config);
    assert.deepEqual(back.config.rootfs.diff_ids, image.diffIds);
    for (const layer of back.parsed.layers) {
      assert.equal(sha256Digest(await readAll(await source.blob(layer), 1 << 30)), layer.digest);
    }
    // Out of the daemon into an OCI layout that skopeo reads.
    const layout = join(scratch, "from-daemon");
    await copyImage(source, await openLayoutSink(layout, "v1", {}));
    const skopeo = JSON.parse((await run("skopeo", ["inspect", `oci:${layout}:v1`])).stdout);
    assert.deepEqual(skopeo.Layers, image.diffIds);
    await source.close();
    // The spool is gone once the source is closed; nothing is left in scratch space.
    assert.deepEqual((await readdir(scratch)).sort(), ["from-daemon"]);
  });

  test("an index is loaded as the requested platform's image", async () => {
    const amd = await buildRandomImage({ architecture: "amd64" });
    const arm = await buildRandomImage({ architecture: "arm64" });
    const index = buildIndex([
      { image: amd, architecture: "amd64" },
      { image: arm, architecture: "arm64" },
    ]);
    const sink = await openDaemonSink(parseReference("suture/multi:arm"), { dockerHost: dockerd.host });
    await copyImage(memorySource("memory", index.manifest, index.blobs), sink, {
      platform: { os: "linux", architecture: "arm64" },
    });
    const inspect = JSON.parse((await docker("image", "inspect", "suture/multi:arm")).stdout)[0];
    assert.equal(inspect.Id, arm.configDigest);
    assert.equal(inspect.Architecture, "arm64");
  });

  test("an image missing from the daemon is NOT_FOUND with the fix", async () => {
    await assert.rejects(
      openDaemonSource(parseReference("suture/absent:1"), { dockerHost: dockerd.host }),
      (e) => {
        assert.ok(isSutureError(e, "NOT_FOUND"));
        assert.match(
          e.message,
          /suture\/absent:1 not found in the Docker daemon at \S+: docker pull it first/,
        );
        return true;
      },
    );
  });

  test("the daemon's load error is surfaced", async () => {
    // Linux dockerd refuses Windows images: it reports that inside the 200 response's JSON lines.
    const image = await buildRandomImage({ os: "windows" });
    const spool = await mkdtemp(join(scratch, "spool-"));
    const sink = await openDaemonSink(parseReference("suture/windows:1"), {
      dockerHost: dockerd.host,
      tmpDir: spool,
    });
    await assert.rejects(copyImage(memorySource("memory", image.manifest, image.blobs), sink), (e) => {
      assert.ok(isSutureError(e, "DAEMON"));
      assert.match(e.message, /could not load suture\/windows:1: .*windows/i);
      return true;
    });
    await assert.rejects(docker("image", "inspect", "suture/windows:1"));
    assert.deepEqual(await readdir(spool), [], "the spool is removed on abort");
  });

  test("a daemon destination needs a tag", async () => {
    await assert.rejects(
      openDaemonSink(parseReference(`suture/x@sha256:${"a".repeat(64)}`), { dockerHost: dockerd.host }),
      (e) => isSutureError(e, "INVALID_REFERENCE"),
    );
  });
});
