import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { findCredentials, helperServerUrl, normalizeRegistryHost } from "./credentials.ts";

const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("registry credentials", () => {
  let work: string;
  let n = 0;
  /** A fresh home + docker config dir + PATH dir, with no other auth files in sight. */
  const setup = async (dockerConfig?: unknown) => {
    const root = join(work, String(n++));
    const home = join(root, "home");
    const docker = join(root, "docker");
    const bin = join(root, "bin");
    await mkdir(home, { recursive: true });
    await mkdir(docker, { recursive: true });
    await mkdir(bin, { recursive: true });
    if (dockerConfig !== undefined)
      await writeFile(join(docker, "config.json"), JSON.stringify(dockerConfig));
    const env: NodeJS.ProcessEnv = { PATH: `${bin}:/usr/bin:/bin` };
    return { root, home, docker, bin, env, opts: { dockerConfig: docker, homeDir: home, env } };
  };
  /** A docker-credential-NAME script that answers per server, logging the server it was asked for. */
  const helper = async (bin: string, name: string, answers: Record<string, string>) => {
    const cases = Object.entries(answers)
      .map(([server, json]) => `  '${server}') echo '${json}' ;;`)
      .join("\n");
    const path = join(bin, `docker-credential-${name}`);
    await writeFile(
      path,
      `#!/bin/sh\n[ "$1" = get ] || exit 3\nread server\necho "$server" >> "$0.log"\ncase "$server" in\n${cases}\n  *) echo "credentials not found in native keychain"; exit 1 ;;\nesac\n`,
    );
    await chmod(path, 0o755);
  };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "suture-creds-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  test("Docker Hub's URL-form key and registry aliases normalise to docker.io", () => {
    assert.equal(normalizeRegistryHost("https://index.docker.io/v1/"), "docker.io");
    assert.equal(normalizeRegistryHost("registry-1.docker.io"), "docker.io");
    assert.equal(normalizeRegistryHost("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
    assert.equal(helperServerUrl("docker.io"), "https://index.docker.io/v1/");
    assert.equal(helperServerUrl("ghcr.io"), "ghcr.io");
  });

  test("auths: base64 auth, username/password, identitytoken, Docker Hub's legacy key", async () => {
    const { opts, docker } = await setup({
      auths: {
        "https://index.docker.io/v1/": { auth: b64("hubuser:hub:pass") },
        "http://127.0.0.1:5000": { username: "u", password: "p" },
        "quay.io": { auth: b64("robot:x"), identitytoken: "refresh-123" },
        "empty.example": {},
      },
    });
    const hub = await findCredentials("docker.io", "library/nginx", opts);
    assert.deepEqual(hub, {
      username: "hubuser",
      password: "hub:pass",
      identityToken: undefined,
      source: join(docker, "config.json"),
    });
    assert.equal((await findCredentials("127.0.0.1:5000", "x", opts))?.password, "p");
    const quay = await findCredentials("quay.io", "org/app", opts);
    assert.equal(quay?.identityToken, "refresh-123");
    assert.equal(quay?.password, undefined, "an identity token replaces the password");
    assert.equal(await findCredentials("empty.example", "x", opts), undefined);
    assert.equal(await findCredentials("other.example", "x", opts), undefined);
  });

  test("credHelpers and credsStore run docker-credential-NAME get with the server on stdin", async () => {
    const { opts, bin } = await setup({
      auths: { "fallback.example": { auth: b64("file:user") } },
      credsStore: "store",
      credHelpers: { "helped.example": "special", "index.docker.io": "special" },
    });
    await helper(bin, "special", {
      "helped.example": '{"ServerURL":"helped.example","Username":"alice","Secret":"s3cret"}',
      "https://index.docker.io/v1/": '{"ServerURL":"x","Username":"<token>","Secret":"refresh-hub"}',
    });
    await helper(bin, "store", {
      "stored.example": '{"ServerURL":"stored.example","Username":"bob","Secret":"pw"}',
    });
    assert.deepEqual(await findCredentials("helped.example", "x", opts), {
      username: "alice",
      password: "s3cret",
      source: "docker-credential-special",
    });
    assert.deepEqual(await findCredentials("docker.io", "library/x", opts), {
      identityToken: "refresh-hub",
      source: "docker-credential-special",
    });
    assert.equal((await findCredentials("stored.example", "x", opts))?.username, "bob");
    // Not in the store: the file's own entry is used.
    assert.equal((await findCredentials("fallback.example", "x", opts))?.username, "file");
    assert.equal(await findCredentials("nowhere.example", "x", opts), undefined);
  });

  test("a helper named for the registry but not installed is an error that says so; a missing store is not", async () => {
    const { opts } = await setup({
      auths: { "b.example": { auth: b64("u:p") } },
      credsStore: "desktop",
      credHelpers: { "a.example": "nothere" },
    });
    await assert.rejects(findCredentials("a.example", "x", opts), (e) => {
      assert.ok(isSutureError(e, "UNAUTHORIZED"));
      assert.match(e.message, /docker-credential-nothere .*not installed/);
      return true;
    });
    assert.equal((await findCredentials("b.example", "x", opts))?.username, "u");
  });

  test("containers auth files: REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR and ~/.config, namespaced keys", async () => {
    const { opts, root, home, env } = await setup();
    const authFile = join(root, "auth.json");
    await writeFile(
      authFile,
      JSON.stringify({
        auths: {
          "registry.example": { auth: b64("whole:registry") },
          "registry.example/team": { auth: b64("team:member") },
          "registry.example/team/app": { auth: b64("app:robot") },
        },
      }),
    );
    env.REGISTRY_AUTH_FILE = authFile;
    assert.equal((await findCredentials("registry.example", "team/app", opts))?.username, "app");
    assert.equal((await findCredentials("registry.example", "team/other", opts))?.username, "team");
    assert.equal((await findCredentials("registry.example", "solo", opts))?.username, "whole");
    delete env.REGISTRY_AUTH_FILE;

    const runtime = join(root, "run");
    await mkdir(join(runtime, "containers"), { recursive: true });
    await writeFile(
      join(runtime, "containers", "auth.json"),
      JSON.stringify({ auths: { "xdg.example": { auth: b64("xdg:pw") } } }),
    );
    env.XDG_RUNTIME_DIR = runtime;
    assert.equal((await findCredentials("xdg.example", "x", opts))?.username, "xdg");

    await mkdir(join(home, ".config", "containers"), { recursive: true });
    await writeFile(
      join(home, ".config", "containers", "auth.json"),
      JSON.stringify({ auths: { "home.example": { auth: b64("home:pw") } } }),
    );
    assert.equal((await findCredentials("home.example", "x", opts))?.username, "home");
  });

  test("the Docker config wins over containers auth files", async () => {
    const { opts, root, env } = await setup({ auths: { "both.example": { auth: b64("docker:pw") } } });
    const authFile = join(root, "auth.json");
    await writeFile(authFile, JSON.stringify({ auths: { "both.example": { auth: b64("podman:pw") } } }));
    env.REGISTRY_AUTH_FILE = authFile;
    assert.equal((await findCredentials("both.example", "x", opts))?.username, "docker");
  });

  test("a malformed config is reported without quoting its secrets", async () => {
    const { opts, docker } = await setup();
    await writeFile(join(docker, "config.json"), '{"auths": {"r": {"auth": "c2VjcmV0OnBhc3N3b3Jk"}');
    await assert.rejects(findCredentials("r", "x", opts), (e) => {
      assert.ok(isSutureError(e, "IO"));
      assert.match(e.message, /config\.json is not valid JSON/);
      assert.doesNotMatch(e.message, /c2VjcmV0/);
      return true;
    });
    await writeFile(join(docker, "config.json"), JSON.stringify({ auths: { r: { auth: b64("nocolon") } } }));
    await assert.rejects(findCredentials("r", "x", opts), /not base64 of user:password/);
  });

  test("a config whose credential fields have the wrong type names the field, not its value; null means unset", async () => {
    const { opts, docker } = await setup();
    const wrong: [unknown, RegExp][] = [
      [{ auths: { r: { auth: 42, password: "s3cret-pass" } } }, /at auths\.r\.auth: .*expected string/],
      [{ auths: { r: "s3cret-pass" } }, /at auths\.r: .*expected object/],
      [{ credHelpers: { r: ["s3cret-pass"] } }, /at credHelpers\.r: .*expected string/],
      [["s3cret-pass"], /at \(root\): .*expected object/],
    ];
    for (const [config, where] of wrong) {
      await writeFile(join(docker, "config.json"), JSON.stringify(config));
      await assert.rejects(findCredentials("r", "x", opts), (e) => {
        assert.ok(isSutureError(e, "IO"), String(e));
        assert.match(e.message, where);
        assert.match(
          e.message,
          /config\.json is malformed at .*: fix or remove it, or run docker login again$/,
        );
        assert.doesNotMatch(e.message, /s3cret|\n/);
        return true;
      });
    }
    // As Docker reads it: null is an unset field, and fields suture does not use are not read.
    await writeFile(
      join(docker, "config.json"),
      JSON.stringify({
        auths: { r: { auth: b64("u:p"), email: null, identitytoken: null }, other: null },
        credsStore: null,
        credHelpers: null,
        psFormat: 7,
      }),
    );
    assert.deepEqual(await findCredentials("r", "x", opts), {
      username: "u",
      password: "p",
      identityToken: undefined,
      source: join(docker, "config.json"),
    });
  });
});
