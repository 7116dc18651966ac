import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { assertCleanFailure, fuzzParameters, hostileText, mutatedJson } from "../../../test/fuzz/fuzz.ts";
import { errorFromResponse, parseErrorBody } from "./registry-errors.ts";

// Property: whatever a registry answers with an error status (distribution JSON, HTML, garbage),
// the error suture reports is a SutureError with a stable code and a one-line message.

const BODY = {
  errors: [
    { code: "MANIFEST_UNKNOWN", message: "manifest unknown", detail: { Tag: "v1" } },
    { code: "DENIED", message: "requested access to the resource is denied" },
  ],
};
const STATUSES = [400, 401, 403, 404, 405, 408, 413, 416, 429, 500, 502, 503, 504, 418];

test("errorFromResponse: any body and status give a one-line error with a stable code", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        mutatedJson(BODY).map((d) => JSON.stringify(d) ?? ""),
        hostileText([
          JSON.stringify(BODY),
          "<html>\n<body>502 Bad Gateway</body>\n</html>",
          "upstream error\nline 2",
        ]),
      ),
      fc.constantFrom(...STATUSES),
      fc.boolean(),
      (body, status, authenticated) => {
        assert.ok(Array.isArray(parseErrorBody(body)));
        const e = errorFromResponse(status, body, {
          registry: "127.0.0.1:5000",
          operation: "pull library/debian",
          authenticated,
        });
        assertCleanFailure(e, ["UNAUTHORIZED", "DENIED", "NOT_FOUND", "DIGEST_MISMATCH", "REGISTRY"]);
      },
    ),
    fuzzParameters(600),
  );
});

test("regression: a registry message with line breaks is folded onto the error's one line", () => {
  const body = JSON.stringify({ errors: [{ code: "DENIED", message: "no\nway\r" }] });
  const e = errorFromResponse(400, body, { registry: "r", operation: "pull x", authenticated: false });
  assert.equal(
    e.message,
    "r (pull x) answered HTTP 400 Bad Request: unexpected registry error [registry: DENIED no way]",
  );
});
