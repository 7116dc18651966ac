import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  mutatedJson,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  parsesOrFailsCleanlyAsync,
  withinBudget,
} from "../../test/fuzz/fuzz.ts";
import { SutureError } from "../errors/errors.ts";
import { parseReference } from "../ref/reference.ts";
import { parseTransportReference } from "../ref/transport.ts";
import { ArchiveManifestSchema, selectArchiveItem } from "../transports/archive/archive-manifest.ts";
import { parseChallenges, pickChallenge } from "../transports/registry/challenge.ts";
import { findCredentials } from "../transports/registry/credentials.ts";
import { selectFromLayoutIndex } from "./layout-index.ts";
import {
  ImageConfigSchema,
  ImageManifestSchema,
  IndexSchema,
  parseJson,
  sniffManifestMediaType,
} from "./manifest.ts";
import { parsePlatform } from "./platform.ts";

// Property: what a registry, an OCI layout or a docker-archive hands us (manifests, indexes,
// configs, manifest.json, WWW-Authenticate) and what a user or config file says (references,
// platforms, config.json) is parsed or refused with one line of a stable code.

const DIGEST = `sha256:${"a".repeat(64)}`;
const MANIFEST = {
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: DIGEST, size: 1234 },
  layers: [
    { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: DIGEST, size: 29126 },
    {
      mediaType: "application/vnd.oci.image.layer.v1.tar+zstd",
      digest: DIGEST,
      size: 1,
      annotations: { a: "b" },
    },
  ],
  annotations: { "org.opencontainers.image.base.name": "docker.io/library/debian:12" },
};
const INDEX = {
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [
    {
      mediaType: MANIFEST.mediaType,
      digest: DIGEST,
      size: 100,
      platform: { architecture: "amd64", os: "linux" },
    },
    {
      mediaType: MANIFEST.mediaType,
      digest: DIGEST,
      size: 100,
      platform: { architecture: "arm64", os: "linux", variant: "v8" },
    },
  ],
};
const CONFIG = {
  architecture: "amd64",
  os: "linux",
  config: { Env: ["PATH=/usr/bin"], Cmd: ["bash"], Labels: { a: "b" } },
  rootfs: { type: "layers", diff_ids: [DIGEST] },
  history: [{ created: "2024-01-01T00:00:00Z", created_by: "/bin/sh -c #(nop) ADD file" }],
};
const ARCHIVE_MANIFEST = [
  {
    Config: "blobs/sha256/aaaa",
    RepoTags: ["debian:12", "localhost:5000/x/y:v1"],
    Layers: ["blobs/sha256/bbbb"],
  },
  { Config: "cccc.json", RepoTags: null, Layers: ["dddd/layer.tar"] },
];

const jsonDocument = (seed: unknown) =>
  fc.oneof(
    { weight: 3, arbitrary: mutatedJson(seed).map((d) => JSON.stringify(d) ?? "") },
    { weight: 2, arbitrary: hostileText([JSON.stringify(seed, null, 2)], 3) },
  );

test("manifests, indexes, configs: parsed or one-line INVALID_MANIFEST", () => {
  const cases = [
    [ImageManifestSchema, MANIFEST],
    [IndexSchema, INDEX],
    [ImageConfigSchema, CONFIG],
  ] as const;
  for (const [schema, seed] of cases) {
    fc.assert(
      fc.property(jsonDocument(seed), (text) => {
        withinBudget(PARSE_BUDGET_MS, () => {
          parsesOrFailsCleanly(["INVALID_MANIFEST"], () =>
            parseJson(schema as never, text, "manifest sha256:x"),
          );
          parsesOrFailsCleanly(["INVALID_MANIFEST"], () => sniffManifestMediaType(Buffer.from(text)));
        });
      }),
      fuzzParameters(200),
    );
  }
});

test("references, transport references and platforms: parsed or one-line INVALID_REFERENCE", () => {
  const seeds = [
    "docker.io/library/debian:12",
    `localhost:5000/a/b-c__d:v1.0@${DIGEST}`,
    "oci:./out:v1",
    "docker-archive:/tmp/img.tar:debian:12",
    "docker-daemon:nginx",
    "docker://quay.io/org/repo",
    "linux/arm64/v8",
  ];
  fc.assert(
    fc.property(hostileText(seeds, 3), (text) => {
      withinBudget(PARSE_BUDGET_MS, () => {
        const ref = parsesOrFailsCleanly(["INVALID_REFERENCE"], () => parseReference(text));
        if (ref) assert.ok(ref.registry && ref.repository && (ref.tag || ref.digest));
        parsesOrFailsCleanly(["INVALID_REFERENCE"], () => parseTransportReference(text));
        parsesOrFailsCleanly(["INVALID_REFERENCE", "UNSUPPORTED_PLATFORM", "USAGE"], () =>
          parsePlatform(text),
        );
      });
    }),
    fuzzParameters(800),
  );
});

test("WWW-Authenticate: any header parses to challenges, in linear time", () => {
  const seeds = [
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"',
    'Basic realm="Registry Realm", Bearer realm="http://127.0.0.1:1/t",error="invalid_token"',
  ];
  fc.assert(
    fc.property(fc.oneof(hostileText(seeds), fc.array(hostileText(seeds), { maxLength: 3 })), (header) => {
      const challenges = withinBudget(PARSE_BUDGET_MS, () => parseChallenges(header));
      for (const c of challenges) assert.equal(c.scheme, c.scheme.toLowerCase());
      pickChallenge(challenges);
    }),
    fuzzParameters(600),
  );
});

test("docker-archive manifest.json: parsed and an image chosen, or one-line error", async () => {
  await fc.assert(
    fc.asyncProperty(
      jsonDocument(ARCHIVE_MANIFEST),
      fc.constantFrom(undefined, "debian:12", "x/y:v2"),
      async (text, name) => {
        const items = parsesOrFailsCleanly(["INVALID_MANIFEST"], () =>
          parseJson(ArchiveManifestSchema, text, "img.tar manifest.json"),
        );
        if (!items) return;
        const ref = name === undefined ? undefined : parseReference(name);
        await parsesOrFailsCleanlyAsync(["NOT_FOUND", "INVALID_REFERENCE"], () =>
          selectArchiveItem(items, ref, { name: "img.tar", configDigest: async () => DIGEST }),
        );
      },
    ),
    fuzzParameters(300),
  );
});

test("OCI layout index.json: a tag selects an entry, or one-line NOT_FOUND / INVALID_REFERENCE", async () => {
  const tagged = structuredClone(INDEX) as { manifests: { annotations?: Record<string, string> }[] };
  tagged.manifests[0]!.annotations = { "org.opencontainers.image.ref.name": "v1" };
  tagged.manifests[1]!.annotations = { "org.opencontainers.image.ref.name": "latest" };
  await fc.assert(
    fc.asyncProperty(jsonDocument(tagged), fc.constantFrom(undefined, "v1", "v2"), async (text, tag) => {
      const index = parsesOrFailsCleanly(["INVALID_MANIFEST"], () =>
        parseJson(IndexSchema, text, "index.json"),
      );
      if (!index) return;
      await parsesOrFailsCleanlyAsync(["NOT_FOUND", "INVALID_REFERENCE"], () =>
        selectFromLayoutIndex(index, tag, async () => undefined, "oci:./out"),
      );
    }),
    fuzzParameters(300),
  );
});

let home: string;
before(() => {
  home = mkdtempSync(join(tmpdir(), "suture-creds-fuzz-"));
});
after(() => rmSync(home, { recursive: true, force: true }));

test("Docker config.json: credentials found, none, or one-line error (helpers never found on PATH)", async () => {
  const seed = {
    auths: {
      "https://index.docker.io/v1/": { auth: Buffer.from("user:pass").toString("base64") },
      "127.0.0.1:5000": { username: "u", password: "p" },
      "quay.io/org": { identitytoken: "tok" },
    },
    credHelpers: { "gcr.io": "gcloud" },
  };
  // An empty PATH: a credHelpers/credsStore entry names a program that does not exist here.
  const env = { PATH: join(home, "no-bin") };
  await fc.assert(
    fc.asyncProperty(
      jsonDocument(seed),
      fc.constantFrom("docker.io", "127.0.0.1:5000", "gcr.io", "quay.io"),
      async (text, registry) => {
        const dir = mkdtempSync(join(home, "d-"));
        writeFileSync(join(dir, "config.json"), text);
        await parsesOrFailsCleanlyAsync(["IO", "UNAUTHORIZED"], () =>
          findCredentials(registry, "org/repo", { dockerConfig: dir, homeDir: dir, env }),
        );
        rmSync(dir, { recursive: true, force: true });
      },
    ),
    fuzzParameters(40),
  );
});

// Regressions: cases the properties above found, kept as plain tests.

test("regression: JSON that is not an object is INVALID_MANIFEST, not a TypeError", () => {
  for (const text of ["null", "1", '"x"']) {
    assert.throws(
      () => sniffManifestMediaType(Buffer.from(text)),
      (e: Error) => e instanceof SutureError && e.code === "INVALID_MANIFEST",
    );
  }
});

test("regression: broken JSON and odd references give one-line errors", () => {
  assert.throws(
    () => parseJson(ArchiveManifestSchema, "\0\n", "img.tar manifest.json"),
    (e: Error) =>
      e.message ===
      `img.tar manifest.json is not valid JSON: Unexpected token '\0', "\0\\n" is not valid JSON`,
  );
  assert.throws(
    () => parseJson(IndexSchema, '{"schemaVersion":2,"manifests":[],"annotations":{"a\\nb":1}}', "index"),
    (e: Error) => e.message.startsWith('index is malformed at "annotations.a\\nb": '),
  );
  assert.throws(
    () => parseReference("\r\n"),
    (e: Error) => e.message === 'invalid image reference "\\r\\n": it is empty',
  );
});

test("regression: a config.json that is not JSON is named without quoting its (secret) text", async () => {
  const dir = mkdtempSync(join(home, "leak-"));
  writeFileSync(join(dir, "config.json"), '\r\n../{"auths":{"x":{"auth":"c2VjcmV0"}}}');
  await assert.rejects(
    findCredentials("docker.io", undefined, { dockerConfig: dir, homeDir: dir, env: {} }),
    (e: Error) => {
      assert.ok(e instanceof SutureError && e.code === "IO");
      assert.ok(!/[\r\n]/.test(e.message) && !e.message.includes("auth"), e.message);
      return true;
    },
  );
});

test("regression: docker-archive RepoTags with line breaks are quoted in the one-line error", async () => {
  await assert.rejects(
    selectArchiveItem(
      [
        { Config: "a.json", RepoTags: ["\n"], Layers: [] },
        { Config: "b.json", RepoTags: ["x:1"], Layers: [] },
      ],
      undefined,
      { name: "img.tar", configDigest: async () => DIGEST },
    ),
    (e: Error) => e.message === 'img.tar holds 2 images ("\\n", x:1): name one, e.g. img.tar:"\\n"',
  );
});

test("regression: a credential helper name with a line break is refused in a one-line error", async () => {
  const dir = mkdtempSync(join(home, "helper-"));
  writeFileSync(join(dir, "config.json"), JSON.stringify({ credHelpers: { "gcr.io": "\n" } }));
  await assert.rejects(
    findCredentials("gcr.io", undefined, {
      dockerConfig: dir,
      homeDir: dir,
      env: { PATH: join(home, "no-bin") },
    }),
    (e: Error) =>
      e instanceof SutureError &&
      e.code === "UNAUTHORIZED" &&
      e.message.startsWith('credential helper name "\\n" in ') &&
      !e.message.includes("\n"),
  );
});

test("regression: OCI layout tags with line breaks are quoted in the one-line error", async () => {
  const index = parseJson(
    IndexSchema,
    JSON.stringify({
      ...INDEX,
      manifests: INDEX.manifests.map((m) => ({
        ...m,
        annotations: { "org.opencontainers.image.ref.name": "a\nb" },
      })),
    }),
    "index.json",
  );
  await assert.rejects(
    selectFromLayoutIndex(index, undefined, async () => undefined, "oci:./out"),
    (e: Error) =>
      e.message === 'oci:./out holds 2 images ("a\\nb"): name one with :TAG, e.g. oci:./out:"a\\nb"',
  );
});
