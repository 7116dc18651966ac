import assert from "node:assert/strict";
import { test } from "node:test";
import { parseChallenges, pickChallenge } from "./challenge.ts";

test("a Bearer challenge yields realm, service and a scope containing commas", () => {
  const [c] = parseChallenges(
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push"',
  );
  assert.equal(c!.scheme, "bearer");
  assert.deepEqual(c!.params, {
    realm: "https://auth.docker.io/token",
    service: "registry.docker.io",
    scope: "repository:library/nginx:pull,push",
  });
});

test("several challenges in one header and across headers are all found, in order", () => {
  const cs = parseChallenges([
    'Basic realm="Registry Realm", Bearer realm="http://127.0.0.1:1/token",service="lab",error="insufficient_scope"',
    "Negotiate",
  ]);
  assert.deepEqual(
    cs.map((c) => c.scheme),
    ["basic", "bearer", "negotiate"],
  );
  assert.equal(cs[0]!.params.realm, "Registry Realm");
  assert.equal(cs[1]!.params.error, "insufficient_scope");
  assert.equal(pickChallenge(cs)!.scheme, "bearer", "bearer is preferred when offered");
});

test("scheme and parameter names are case-insensitive; quoted values keep escapes and spaces", () => {
  const [c] = parseChallenges('BASIC Realm="say \\"hi\\", please" , charset=UTF-8');
  assert.equal(c!.scheme, "basic");
  assert.equal(c!.params.realm, 'say "hi", please');
  assert.equal(c!.params.charset, "UTF-8");
});

test("garbage never throws and a bearer challenge without realm is not picked", () => {
  assert.deepEqual(parseChallenges(undefined), []);
  assert.doesNotThrow(() => parseChallenges('=,,"unterminated'));
  assert.equal(pickChallenge(parseChallenges('Bearer service="x"')), undefined);
  assert.equal(pickChallenge(parseChallenges('Bearer service="x", Basic realm="r"'))!.scheme, "basic");
});
