import assert from "node:assert/strict";
import { test } from "node:test";
import { nextLink } from "./api.ts";
import { errorFromNetwork, errorFromResponse, parseErrorBody } from "./registry-errors.ts";

const ctx = { registry: "127.0.0.1:5000", operation: "pull library/x", authenticated: true };

test("distribution error bodies are parsed; anything else gives an empty list", () => {
  assert.deepEqual(
    parseErrorBody(
      '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}',
    ),
    [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }],
  );
  assert.deepEqual(parseErrorBody("<html>502</html>"), []);
  assert.deepEqual(parseErrorBody('{"errors":"nope"}'), []);
});

test("401 names the registry, the operation and the fix, for rejected and for missing credentials", () => {
  const rejected = errorFromResponse(
    401,
    '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
    {
      ...ctx,
      credentialSource: "/root/.docker/config.json",
    },
  );
  assert.equal(rejected.code, "UNAUTHORIZED");
  assert.equal(rejected.retryable, false);
  assert.match(
    rejected.message,
    /^authentication failed for 127\.0\.0\.1:5000 \(pull library\/x\): check docker login \/ credentials/,
  );
  assert.match(rejected.message, /config\.json/);
  const anonymous = errorFromResponse(401, "", { ...ctx, authenticated: false });
  assert.match(anonymous.message, /requires authentication .*docker login 127\.0\.0\.1:5000/);
});

test("status codes map to error codes with the right retryability", () => {
  const cases: [number, string, string, boolean][] = [
    [403, "", "DENIED", false],
    [404, '{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}', "NOT_FOUND", false],
    [429, '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}', "REGISTRY", true],
    [500, "", "REGISTRY", true],
    [503, "", "REGISTRY", true],
    [400, '{"errors":[{"code":"DIGEST_INVALID","message":"digest invalid"}]}', "DIGEST_MISMATCH", false],
    [400, '{"errors":[{"code":"MANIFEST_INVALID","message":"bad"}]}', "REGISTRY", false],
  ];
  for (const [status, body, code, retryable] of cases) {
    const e = errorFromResponse(status, body, ctx);
    assert.equal(e.code, code, `HTTP ${status}`);
    assert.equal(e.retryable, retryable, `HTTP ${status} retryable`);
    assert.equal(e.status, status);
    assert.match(e.message, /127\.0\.0\.1:5000/);
  }
  assert.match(
    errorFromResponse(404, "", { ...ctx, object: "manifest library/x:v9" }).message,
    /^manifest library\/x:v9 not found/,
  );
  assert.equal(errorFromResponse(429, "", ctx, 2000).retryAfterMs, 2000);
});

test("secrets in a registry's error text are redacted", () => {
  const e = errorFromResponse(
    400,
    '{"errors":[{"code":"DENIED","message":"token=eyJhbGciOiJFUzI1NiJ9.abcdefgh rejected, Bearer eyJzdWIiOiJ4In0.zzzzzz"}]}',
    ctx,
  );
  assert.doesNotMatch(e.message, /eyJhbGciOiJFUzI1NiJ9|eyJzdWIiOiJ4In0/);
  assert.match(e.message, /token=\*\*\*/);
});

test("network failures say whether the registry is up and whether a retry can help", () => {
  const refused = errorFromNetwork(
    Object.assign(new TypeError("fetch failed"), {
      cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }),
    }),
    { registry: "127.0.0.1:1", operation: "pull x" },
  );
  assert.equal(refused.code, "NETWORK");
  assert.match(
    refused.message,
    /cannot reach 127\.0\.0\.1:1 \(pull x\): .*ECONNREFUSED.*is the registry running\? check the address/,
  );
  assert.equal(refused.retryable, false);
  const reset = errorFromNetwork(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }), {
    registry: "r",
    operation: "pull x",
  });
  assert.equal(reset.retryable, true);
  const dns = errorFromNetwork(
    Object.assign(new Error("getaddrinfo ENOTFOUND nope"), { code: "ENOTFOUND" }),
    {
      registry: "nope",
      operation: "pull x",
    },
  );
  assert.match(dns.message, /cannot resolve nope/);
  const tls = errorFromNetwork(
    Object.assign(new Error("self-signed certificate"), { code: "DEPTH_ZERO_SELF_SIGNED_CERT" }),
    {
      registry: "r.example",
      operation: "pull x",
    },
  );
  assert.match(tls.message, /^TLS connection to r\.example/);
});

test("Link headers yield the next page, resolved against the answering URL", () => {
  const res = {
    url: "https://r.example/v2/x/tags/list?n=2",
    headers: { link: '</v2/x/tags/list?last=b&n=2>; rel="next"' },
  };
  assert.equal(nextLink(res), "https://r.example/v2/x/tags/list?last=b&n=2");
  assert.equal(nextLink({ url: res.url, headers: {} }), undefined);
  assert.equal(nextLink({ url: res.url, headers: { link: '<https://o/x>; rel="prev"' } }), undefined);
});
