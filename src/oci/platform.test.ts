import assert from "node:assert/strict";
import { test } from "node:test";
import { formatPlatform, parsePlatform, platformMatches } from "./platform.ts";

test("arm64/v8 and arm64 are the same platform", () => {
  assert.equal(formatPlatform(parsePlatform("linux/arm64/v8")), "linux/arm64");
  assert.ok(
    platformMatches(parsePlatform("linux/arm64"), { os: "linux", architecture: "arm64", variant: "v8" }),
  );
  assert.ok(platformMatches(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64" }));
});

test("variants distinguish arm versions", () => {
  assert.ok(
    !platformMatches(parsePlatform("linux/arm/v6"), { os: "linux", architecture: "arm", variant: "v7" }),
  );
  assert.ok(platformMatches(parsePlatform("linux/arm"), { os: "linux", architecture: "arm", variant: "v7" }));
  assert.ok(!platformMatches(parsePlatform("linux/amd64"), { os: "linux", architecture: "arm64" }));
});

test("bad platform strings are rejected", () => {
  assert.throws(() => parsePlatform("amd64"), /os\/arch/);
  assert.throws(() => parsePlatform("linux//v7"), /os\/arch/);
});
