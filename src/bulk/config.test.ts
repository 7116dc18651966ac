import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { parseBulkConfig, parseTagTemplate } from "./config.ts";

const HEAD = "apiVersion: copa.sh/v1alpha1\nkind: PatchConfig\n";

/** The one-line USAGE error a config gets, for matching. */
function refusal(text: string): string {
  try {
    parseBulkConfig(text, "bulk.yaml");
  } catch (e) {
    assert.ok(isSutureError(e), String(e));
    assert.equal(e.code, "USAGE");
    assert.doesNotMatch(e.message, /\n/);
    return e.message;
  }
  assert.fail("the config was accepted");
}

test("copa's own bulk fixtures' shapes are read: list, pattern with maxTags and exclude, latest, platforms, targets", () => {
  const config = parseBulkConfig(
    `${HEAD}target:
  registry: ghcr.io/myorg
  tag: "{{ .SourceTag }}-patched"
images:
  - name: nginx
    image: docker.io/library/nginx
    tags:
      strategy: pattern
      pattern: "^1\\\\.25\\\\.[0-9]+$"
      maxTags: 2
      exclude: ["1.25.1"]
  - name: alpine
    image: alpine
    tags: { strategy: latest }
  - name: ubuntu
    image: docker.io/library/ubuntu
    tags:
      strategy: list
      list: ["20.04"]
    target:
      tag: "{{ .SourceTag }}-patched-e2e"
  - name: debian
    image: 127.0.0.1:5000/lab/debian
    platforms: ["linux/amd64", "linux/arm64"]
    tags: { strategy: list, list: ["12.4-slim"] }
    target: { registry: "127.0.0.1:5000/patched" }
`,
    "bulk.yaml",
  );
  const [nginx, alpine, ubuntu, debian] = config.images;
  assert.equal(nginx!.tags.strategy, "pattern");
  assert.ok(nginx!.tags.strategy === "pattern" && nginx!.tags.pattern.test("1.25.3"));
  assert.ok(nginx!.tags.strategy === "pattern" && !nginx!.tags.pattern.test("1.25.3-alpine"));
  assert.deepEqual(nginx!.tags.strategy === "pattern" && nginx!.tags.exclude, ["1.25.1"]);
  assert.deepEqual(nginx!.targetRepository, { registry: "ghcr.io", repository: "myorg/nginx" });
  assert.equal(nginx!.tagTemplate.render("1.25.3"), "1.25.3-patched");
  assert.deepEqual(alpine!.repository, { registry: "docker.io", repository: "library/alpine" });
  assert.deepEqual(alpine!.targetRepository, { registry: "ghcr.io", repository: "myorg/alpine" });
  // A per-image target overrides the global one field by field: the registry stays.
  assert.equal(ubuntu!.tagTemplate.render("20.04"), "20.04-patched-e2e");
  assert.deepEqual(ubuntu!.targetRepository, { registry: "ghcr.io", repository: "myorg/ubuntu" });
  assert.deepEqual(debian!.targetRepository, { registry: "127.0.0.1:5000", repository: "patched/debian" });
  assert.deepEqual(
    debian!.platforms?.map((p) => `${p.os}/${p.architecture}`),
    ["linux/amd64", "linux/arm64"],
  );
});

test("without a target the patched tags go to the source repository under copa's default template", () => {
  const [image] = parseBulkConfig(
    `${HEAD}images:\n  - { name: a, image: "127.0.0.1:5000/lab/a", tags: { strategy: list, list: ["1"] } }\n`,
    "bulk.yaml",
  ).images;
  assert.deepEqual(image!.targetRepository, { registry: "127.0.0.1:5000", repository: "lab/a" });
  assert.equal(image!.tagTemplate.render("1"), "1-patched");
});

test("tag templates: {{ .SourceTag }} with Go's spacing and trim markers; anything else is refused in one line", () => {
  assert.equal(parseTagTemplate("{{.SourceTag}}-fixed").render("3.19.1"), "3.19.1-fixed");
  assert.equal(parseTagTemplate("v-{{ .SourceTag }}").render("2"), "v-2");
  assert.equal(parseTagTemplate("p- {{- .SourceTag -}} -x").render("1"), "p-1-x");
  assert.equal(parseTagTemplate("{{ .SourceTag }}.{{ .SourceTag }}").render("1"), "1.1");
  for (const bad of [
    "{{ .Tag }}-patched",
    "{{ .SourceTag | upper }}",
    "{{ if .SourceTag }}x{{ end }}",
    "{{ .SourceTag",
  ]) {
    assert.throws(
      () => parseTagTemplate(bad),
      (e) => isSutureError(e) && e.code === "USAGE" && !e.message.includes("\n"),
      bad,
    );
  }
});

test("bad configs are refused in one line naming the file, line, field and the fix", () => {
  assert.match(
    refusal("kind: PatchConfig\nimages: []\n"),
    /^bulk\.yaml:1: apiVersion must be copa\.sh\/v1alpha1 \(it is missing\)/,
  );
  assert.match(
    refusal("apiVersion: copa.sh/v1beta1\nkind: PatchConfig\n"),
    /^bulk\.yaml:1: apiVersion: apiVersion must be copa\.sh\/v1alpha1, not "copa\.sh\/v1beta1"/,
  );
  assert.match(
    refusal("apiVersion: copa.sh/v1alpha1\nkind: Patch\n"),
    /bulk\.yaml:2: kind: kind must be PatchConfig/,
  );
  assert.match(refusal(`${HEAD}images: []\n`), /bulk\.yaml:3: images: list at least one image/);
  assert.match(
    refusal(`${HEAD}images:\n  - name: a\n    image: x\n    tags: { strategy: newest }\n`),
    /images\[0\]\.tags\.strategy: strategy must be list, pattern or latest/,
  );
  assert.match(
    refusal(`${HEAD}images:\n  - name: a\n    image: x\n    tags:\n      strategy: pattern\n`),
    /bulk\.yaml:7: images\[0\]\.tags\.pattern: strategy pattern needs a regular expression/,
  );
  assert.match(
    refusal(
      `${HEAD}images:\n  - name: a\n    image: x\n    tags: { strategy: pattern, pattern: "^1\\\\.(" }\n`,
    ),
    /images\[0\]\.tags\.pattern: not a valid regular expression/,
  );
  assert.match(
    refusal(`${HEAD}images:\n  - name: a\n    image: x\n    tags: { strategy: list }\n`),
    /images\[0\]\.tags\.list: strategy list needs the tags/,
  );
  assert.match(
    refusal(
      `${HEAD}images:\n  - name: a\n    image: x\n    tags: { strategy: list, list: ["1"], maxTags: 2 }\n`,
    ),
    /images\[0\]\.tags\.maxTags: applies to strategy pattern only/,
  );
  assert.match(
    refusal(
      `${HEAD}images:\n  - name: a\n    image: x\n    tags: { strategy: pattern, pattern: ".", maxTags: 0 }\n`,
    ),
    /images\[0\]\.tags\.maxTags: maxTags must be 1 or more/,
  );
  assert.match(
    refusal(`${HEAD}images:\n  - name: a\n    image: x\n    tags: { strategy: latest }\n    maxtags: 3\n`),
    /bulk\.yaml:7: images\[0\]\.maxtags: unknown field: remove it or check its spelling/,
  );
  assert.match(
    refusal(
      `${HEAD}images:\n  - name: a\n    image: docker.io/library/nginx:1.25\n    tags: { strategy: latest }\n`,
    ),
    /images\[0\]\.image: name the repository without a tag/,
  );
  assert.match(
    refusal(`${HEAD}images:\n  - name: a\n    image: "Not A Repo"\n    tags: { strategy: latest }\n`),
    /images\[0\]\.image: invalid image reference/,
  );
  assert.match(
    refusal(`${HEAD}images:\n  - image: x\n    tags: { strategy: latest }\n`),
    /images\[0\]\.name: is required/,
  );
  assert.match(
    refusal(
      `${HEAD}images:\n  - name: a\n    image: x\n    platforms: ["linux/mips64"]\n    tags: { strategy: latest }\n`,
    ),
    /images\[0\]\.platforms\[0\]: "linux\/mips64" is not one of linux\/386/,
  );
  assert.match(
    refusal(
      `${HEAD}target:\n  tag: "{{ .Digest }}"\nimages:\n  - { name: a, image: x, tags: { strategy: latest } }\n`,
    ),
    /bulk\.yaml:4: target\.tag: tag template "\{\{ \.Digest \}\}": "\{\{ \.Digest \}\}" is not \{\{ \.SourceTag \}\}/,
  );
  assert.match(
    refusal(
      `${HEAD}target:\n  tag: "{{ .SourceTag }}"\nimages:\n  - { name: a, image: x, tags: { strategy: latest } }\n`,
    ),
    /target\.tag: the patched tag would replace the source tag/,
  );
  assert.match(
    refusal(
      `${HEAD}images:\n  - { name: a, image: x, tags: { strategy: latest }, target: { tag: "{{ .SourceTag }}/x" } }\n`,
    ),
    /images\[0\]\.target\.tag: .* which is not a valid tag/,
  );
  assert.match(refusal(`${HEAD}images:\n  - name: a\n  name: b\n`), /bulk\.yaml:\d+: not valid YAML/);
  assert.match(refusal(`${HEAD}images: [\n`), /not valid YAML/);
  assert.match(refusal("- just\n- a list\n"), /not a PatchConfig/);
});
