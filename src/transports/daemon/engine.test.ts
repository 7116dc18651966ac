import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { compareApiVersions, DEFAULT_DOCKER_HOST, resolveEngineEndpoint } from "./engine.ts";

describe("Docker Engine endpoint", () => {
  test("resolves unix and tcp hosts, option before DOCKER_HOST before the default", (t) => {
    const saved = { ...process.env };
    t.after(() => {
      for (const k of ["DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_TLS"]) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    });
    delete process.env.DOCKER_HOST;
    delete process.env.DOCKER_TLS_VERIFY;
    delete process.env.DOCKER_TLS;
    assert.deepEqual(resolveEngineEndpoint({}), {
      host: DEFAULT_DOCKER_HOST,
      socketPath: "/var/run/docker.sock",
    });
    process.env.DOCKER_HOST = "unix:///run/user/1000/podman/podman.sock";
    assert.equal(resolveEngineEndpoint({}).socketPath, "/run/user/1000/podman/podman.sock");
    const tcp = resolveEngineEndpoint({ dockerHost: "tcp://127.0.0.1:2375" });
    assert.equal(tcp.hostname, "127.0.0.1");
    assert.equal(tcp.port, 2375);
    assert.equal(tcp.tls, undefined);
    process.env.DOCKER_TLS_VERIFY = "1";
    const tls = resolveEngineEndpoint({ dockerHost: "tcp://docker.example:2376" });
    assert.equal(tls.tls?.verify, true);
    assert.equal(tls.port, 2376);
    for (const bad of ["ssh://user@host", "unix://", "npipe:////./pipe/docker_engine"]) {
      assert.throws(
        () => resolveEngineEndpoint({ dockerHost: bad }),
        (e) => isSutureError(e, "USAGE"),
      );
    }
  });

  test("compares API versions numerically", () => {
    assert.ok(compareApiVersions("1.41", "1.9") > 0);
    assert.ok(compareApiVersions("1.41", "1.47") < 0);
    assert.equal(compareApiVersions("1.24", "1.24"), 0);
  });
});
