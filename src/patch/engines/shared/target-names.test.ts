import assert from "node:assert/strict";
import test from "node:test";
import { isSutureError } from "../../../errors/errors.ts";
import { assertTargetNames } from "./target-names.ts";

const target = (name: string) => ({ name, fixedVersion: "1" });

test("a report's name that the image's tool would read as an option or a pattern is refused in one line", () => {
  for (const [format, name] of [
    ["rpm", "--nogpgcheck"],
    ["rpm", "openssl*"],
    ["apk", "--allow-untrusted"],
    ["apk", "musl\nbusybox"],
  ] as const)
    assert.throws(
      () => assertTargetNames(format, [target("zlib"), target(name)]),
      (e: unknown) =>
        isSutureError(e, "INVALID_REPORT") &&
        e.message.includes(`which is no ${format} package name: fix the report`) &&
        !e.message.includes("\n"),
      `${format} ${JSON.stringify(name)}`,
    );
  assertTargetNames("rpm", [target("openssl-libs"), target("python3.11")]);
  assertTargetNames("apk", [target("libcrypto3"), target("busybox-binsh")]);
  assertTargetNames("apk", "all");
});
