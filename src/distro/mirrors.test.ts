import assert from "node:assert/strict";
import test from "node:test";
import { mirroredUrl } from "./mirrors.ts";

test("a mirror replaces the repository URL it names, or the prefix a repository lies under", () => {
  const mirrors = { "https://dl-cdn.alpinelinux.org/alpine/": "http://127.0.0.1:8080/alpine" };
  assert.equal(
    mirroredUrl("https://dl-cdn.alpinelinux.org/alpine/v3.20/main", mirrors),
    "http://127.0.0.1:8080/alpine/v3.20/main",
  );
  assert.equal(mirroredUrl("https://dl-cdn.alpinelinux.org/alpine", mirrors), "http://127.0.0.1:8080/alpine");
  // Only at a path boundary: /alpine-extra is another repository.
  assert.equal(
    mirroredUrl("https://dl-cdn.alpinelinux.org/alpine-extra/main", mirrors),
    "https://dl-cdn.alpinelinux.org/alpine-extra/main",
  );
});

test("the longest matching mirror wins", () => {
  const mirrors = {
    "http://deb.debian.org/debian": "http://a/debian",
    "http://deb.debian.org": "http://b",
  };
  assert.equal(mirroredUrl("http://deb.debian.org/debian/", mirrors), "http://a/debian");
  assert.equal(mirroredUrl("http://deb.debian.org/debian-security", mirrors), "http://b/debian-security");
});
