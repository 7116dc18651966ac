import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";
import { parseApkRepositories, readApkConfig, worldTags } from "./config.ts";

test("repository lines: URLs, @tags, comments, mirrors", () => {
  const repos = parseApkRepositories(
    "# main\nhttps://dl-cdn.alpinelinux.org/alpine/v3.20/main/\n\n@edge https://dl-cdn.alpinelinux.org/alpine/edge/testing\n",
    "/etc/apk/repositories",
    { "https://dl-cdn.alpinelinux.org/alpine": "http://127.0.0.1:1/alpine" },
  );
  assert.deepEqual(repos, [
    {
      url: "https://dl-cdn.alpinelinux.org/alpine/v3.20/main",
      fetchUrl: "http://127.0.0.1:1/alpine/v3.20/main",
      origin: "/etc/apk/repositories:2",
    },
    {
      url: "https://dl-cdn.alpinelinux.org/alpine/edge/testing",
      fetchUrl: "http://127.0.0.1:1/alpine/edge/testing",
      tag: "edge",
      origin: "/etc/apk/repositories:4",
    },
  ]);
  // A line apk cannot use is left out with a warning, as apk does.
  const warnings: string[] = [];
  assert.deepEqual(
    parseApkRepositories("https://a b\nhttps://c\n", "/etc/apk/repositories", {}, warnings).map((r) => r.url),
    ["https://c"],
  );
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /repositories:1/);
});

test("the image's configuration: repositories.d, arch, world, keys from /etc/apk/keys, else /usr/share/apk/keys/<arch>", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-apk-config-"));
  try {
    await mkdir(join(root, "etc/apk/keys"), { recursive: true });
    await mkdir(join(root, "etc/apk/repositories.d"), { recursive: true });
    await mkdir(join(root, "usr/share/apk/keys/x86_64"), { recursive: true });
    await writeFile(join(root, "etc/apk/repositories"), "https://r/main\n");
    await writeFile(join(root, "etc/apk/repositories.d/extra.list"), "https://r/extra\n");
    await writeFile(join(root, "etc/apk/repositories.d/ignored.txt"), "https://r/ignored\n");
    await writeFile(join(root, "etc/apk/arch"), "x86_64\n");
    await writeFile(join(root, "etc/apk/world"), "alpine-baselayout\nbusybox>1.0\n");
    await writeFile(join(root, "etc/apk/keys/a.rsa.pub"), "image");
    await writeFile(join(root, "usr/share/apk/keys/a.rsa.pub"), "shared-a");
    await writeFile(join(root, "usr/share/apk/keys/b.rsa.pub"), "shared-b");
    await symlink("../a.rsa.pub", join(root, "usr/share/apk/keys/x86_64/a.rsa.pub"));
    await symlink("../b.rsa.pub", join(root, "usr/share/apk/keys/x86_64/b.rsa.pub"));
    const config = await readApkConfig(root);
    assert.deepEqual(
      config.repositories.map((r) => r.url),
      ["https://r/main", "https://r/extra"],
    );
    assert.equal(config.arch, "x86_64");
    assert.deepEqual(config.world, ["alpine-baselayout", "busybox>1.0"]);
    // /etc/apk/keys is what the image trusts: b, which alpine-keys still ships, is not in it.
    assert.deepEqual(
      [...config.keys].map(([name, pem]) => [name, pem.toString()]),
      [["a.rsa.pub", "image"]],
    );
    // With no key there, Alpine's keys of the image's arch are the fallback.
    await rm(join(root, "etc/apk/keys/a.rsa.pub"));
    assert.deepEqual(
      [...(await readApkConfig(root)).keys].map(([name, pem]) => [name, pem.toString()]),
      [
        ["a.rsa.pub", "shared-a"],
        ["b.rsa.pub", "shared-b"],
      ],
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("the tags a world pins packages to", () => {
  assert.deepEqual(
    [...worldTags(["busybox", "zlib@edge", "curl@testing>8", "!foo", "musl@edge"])],
    ["edge", "testing"],
  );
});
