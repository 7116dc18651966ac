import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { familiarName, formatReference, isLoopbackRegistry, parseReference } from "./reference.ts";
import { formatTransportReference, parseTransportReference } from "./transport.ts";

const digest = `sha256:${"a".repeat(64)}`;

test("docker.io normalisation matches docker's", () => {
  assert.equal(formatReference(parseReference("nginx")), "docker.io/library/nginx:latest");
  assert.equal(formatReference(parseReference("bitnami/nginx:1.25")), "docker.io/bitnami/nginx:1.25");
  assert.equal(
    formatReference(parseReference("index.docker.io/library/nginx:1")),
    "docker.io/library/nginx:1",
  );
  assert.equal(familiarName(parseReference("nginx")), "nginx");
});

test("registries with ports, localhost and digests", () => {
  assert.deepEqual(parseReference("127.0.0.1:5000/a/b:v1"), {
    registry: "127.0.0.1:5000",
    repository: "a/b",
    tag: "v1",
    digest: undefined,
  });
  assert.deepEqual(parseReference("localhost/x"), {
    registry: "localhost",
    repository: "x",
    tag: "latest",
    digest: undefined,
  });
  const r = parseReference(`ghcr.io/o/r@${digest}`);
  assert.equal(r.digest, digest);
  assert.equal(r.tag, undefined);
  assert.equal(parseReference(`ghcr.io/o/r:t@${digest}`).tag, "t");
  // A port-looking suffix without a registry is a tag.
  assert.equal(parseReference("repo:5000").tag, "5000");
});

test("malformed references are rejected with the cause", () => {
  for (const bad of ["", "Upper/Case", "a//b", "a:b:c", "repo@sha256:xyz", "repo:-bad", "a b"]) {
    assert.throws(
      () => parseReference(bad),
      (e) => isSutureError(e, "INVALID_REFERENCE") && e.message.includes("invalid image reference"),
      bad,
    );
  }
});

test("loopback detection", () => {
  assert.ok(isLoopbackRegistry("127.0.0.1:5000"));
  assert.ok(isLoopbackRegistry("localhost:5000"));
  assert.ok(isLoopbackRegistry("[::1]:5000"));
  assert.ok(!isLoopbackRegistry("docker.io"));
  assert.ok(!isLoopbackRegistry("10.0.0.1:5000"));
});

test("transport prefixes", () => {
  assert.deepEqual(parseTransportReference("oci:/tmp/out:v1"), {
    transport: "oci",
    dir: "/tmp/out",
    tag: "v1",
  });
  assert.deepEqual(parseTransportReference("oci:/tmp/out"), {
    transport: "oci",
    dir: "/tmp/out",
    tag: undefined,
  });
  const a = parseTransportReference("docker-archive:img.tar:nginx:1");
  assert.equal(a.transport, "docker-archive");
  assert.equal(a.transport === "docker-archive" && a.ref?.tag, "1");
  assert.equal(parseTransportReference("docker-daemon:nginx").transport, "docker-daemon");
  const podman = parseTransportReference("podman:localhost/app:1");
  assert.deepEqual(
    [podman.transport, podman.transport === "docker-daemon" && podman.engine],
    ["docker-daemon", "podman"],
  );
  assert.equal(formatTransportReference(podman), "podman:localhost/app:1");
  assert.equal(parseTransportReference("docker://nginx").transport, "registry");
  assert.equal(parseTransportReference("nginx:1").transport, "registry");
  assert.throws(() => parseTransportReference("ftp://x"), /unknown transport/);
  assert.throws(() => parseTransportReference("oci:"), /needs a directory/);
});
