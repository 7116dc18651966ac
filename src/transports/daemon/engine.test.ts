import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { mockAgent } from "../../../test/fakes/http-faults.ts";
import { isSutureError } from "../../errors/errors.ts";
import { compareApiVersions, DEFAULT_DOCKER_HOST, EngineClient, resolveEngineEndpoint } from "./engine.ts";

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
    assert.deepEqual(resolveEngineEndpoint({}, { env: {}, exists: () => true }), {
      host: DEFAULT_DOCKER_HOST,
      engine: "docker",
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

  test("Podman: CONTAINER_HOST, else its rootful or rootless socket; docker-daemon falls back to it only without Docker", () => {
    const none = () => false;
    const podman = (uid: number, env: NodeJS.ProcessEnv, exists = none) =>
      resolveEngineEndpoint({ daemonEngine: "podman" }, { uid, env, exists });
    assert.equal(podman(0, {}).socketPath, "/run/podman/podman.sock");
    assert.equal(
      podman(1000, { XDG_RUNTIME_DIR: "/run/user/1000" }).socketPath,
      "/run/user/1000/podman/podman.sock",
    );
    assert.equal(podman(1000, {}).socketPath, "/run/user/1000/podman/podman.sock");
    assert.equal(
      podman(1000, { CONTAINER_HOST: "unix:///tmp/p.sock", DOCKER_HOST: "unix:///x" }).socketPath,
      "/tmp/p.sock",
    );
    assert.equal(podman(0, {}).engine, "podman");
    // --docker-host (the option) wins over every default.
    assert.equal(
      resolveEngineEndpoint({ daemonEngine: "podman", dockerHost: "unix:///opt/s.sock" }, { env: {} })
        .socketPath,
      "/opt/s.sock",
    );

    const docker = (env: NodeJS.ProcessEnv, present: string[]) =>
      resolveEngineEndpoint({}, { uid: 1000, env, exists: (p) => present.includes(p) }).socketPath;
    const rootless = "/run/user/1000/podman/podman.sock";
    const env = { XDG_RUNTIME_DIR: "/run/user/1000" };
    assert.equal(docker(env, ["/var/run/docker.sock", rootless]), "/var/run/docker.sock");
    assert.equal(docker(env, [rootless]), rootless);
    assert.equal(docker({ ...env, CONTAINER_HOST: "unix:///tmp/c.sock" }, ["/tmp/c.sock"]), "/tmp/c.sock");
    assert.equal(
      docker(env, []),
      "/var/run/docker.sock",
      "nothing there: Docker's socket, for its error message",
    );
    assert.equal(docker({ ...env, DOCKER_HOST: "unix:///d.sock" }, [rootless]), "/d.sock");

    assert.throws(
      () =>
        resolveEngineEndpoint(
          { daemonEngine: "podman" },
          { env: { CONTAINER_HOST: "ssh://core@h/run/podman/podman.sock" } },
        ),
      (e) => isSutureError(e, "USAGE") && /forward it/.test((e as Error).message),
    );
  });

  test("compares API versions numerically", () => {
    assert.ok(compareApiVersions("1.41", "1.9") > 0);
    assert.ok(compareApiVersions("1.41", "1.47") < 0);
    assert.equal(compareApiVersions("1.24", "1.24"), 0);
  });
});

describe("Docker Engine client over an injected dispatcher", () => {
  test("negotiates the daemon's API version and sends versioned requests", async () => {
    const agent = mockAgent();
    const pool = agent.get("http://docker");
    pool.intercept({ path: "/_ping" }).reply(200, "OK", { headers: { "api-version": "1.41" } });
    pool.intercept({ path: "/v1.41/images/x/json" }).reply(200, { Id: "sha256:00" });
    const client = await EngineClient.connect({ dockerHost: "unix:///nowhere.sock", dispatcher: agent });
    assert.equal(client.apiVersion, "1.41");
    const res = await client.request({ method: "GET", path: "/images/x/json" });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.body.json(), { Id: "sha256:00" });
  });

  test("a refused connection is a DAEMON error naming the socket and the fix", async () => {
    const agent = mockAgent();
    agent
      .get("http://docker")
      .intercept({ path: "/_ping" })
      .replyWithError(Object.assign(new Error("connect ECONNREFUSED /run/x.sock"), { code: "ECONNREFUSED" }));
    await assert.rejects(
      EngineClient.connect({ dockerHost: "unix:///run/x.sock", dispatcher: agent }),
      (e: unknown) =>
        isSutureError(e, "DAEMON") &&
        /cannot reach the Docker daemon at unix:\/\/\/run\/x\.sock .*ECONNREFUSED.*is dockerd running\?/.test(
          e.message,
        ),
    );
  });
});
