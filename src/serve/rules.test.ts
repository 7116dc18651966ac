import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { parseRules, ruleFromJson, ruleSpec } from "./rules.ts";

const HEAD = "apiVersion: suture.dev/v1alpha1\nkind: ServeRules\n";

test("a rules file: bulk's tag strategies and target template, intervals, scanner command", () => {
  const rules = parseRules(
    `${HEAD}rules:
  - id: web
    image: registry.example:5000/team/web
    tags: { strategy: pattern, pattern: "^1\\\\.", maxTags: 3 }
    target: { registry: registry.example:5000/patched, tag: "{{ .SourceTag }}-fixed" }
    platforms: [linux/amd64]
    interval: 5m
    scanner: { command: [trivy, image, -f, json, "{image}"], format: trivy }
  - id: base
    image: registry.example:5000/base
    tags: { strategy: latest }
`,
    "rules.yaml",
  );
  assert.deepEqual(
    rules.map((r) => [r.id, r.intervalSeconds]),
    [
      ["web", 300],
      ["base", 300],
    ],
  );
  const spec = ruleSpec(rules[0]!);
  assert.equal(spec.tagTemplate.render("1.2"), "1.2-fixed");
  assert.equal(spec.targetRepository.repository, "patched/web");
  // What the API stores comes back through the same check.
  assert.deepEqual(ruleFromJson(rules[0]).rule, rules[0]);
});

test("bad rules are refused in one line naming the file, line and field", () => {
  const cases: [string, RegExp][] = [
    [
      `${HEAD}rules:\n  - id: a\n    image: r.example/x:1\n    tags: { strategy: latest }\n`,
      /rules\.yaml:5: rules\[0\]\.image: name the repository without a tag/,
    ],
    [
      `${HEAD}rules:\n  - id: a\n    image: r.example/x\n    tags: { strategy: pattern, pattern: "(" }\n`,
      /rules\.yaml:\d: rules\[0\]\.tags\.pattern: not a valid regular expression/,
    ],
    [
      `${HEAD}rules:\n  - id: a\n    image: r.example/x\n    tags: { strategy: latest }\n    interval: soon\n`,
      /rules\[0\]\.interval: "soon" is not an interval/,
    ],
    [
      `${HEAD}rules:\n  - id: a\n    image: r.example/x\n    tags: { strategy: latest }\n    interval: 1s\n`,
      /rules\[0\]\.interval: the interval must be at least 5 seconds/,
    ],
    [
      `${HEAD}rules:\n  - id: Bad Id\n    image: r.example/x\n    tags: { strategy: latest }\n`,
      /rules\[0\]\.id: "Bad Id" is not a rule id/,
    ],
    [
      `${HEAD}rules:\n  - id: a\n    image: r.example/x\n    tags: { strategy: latest }\n    colour: red\n`,
      /rules\[0\]\.colour: unknown field/,
    ],
    [
      `${HEAD}rules:\n  - id: a\n    image: r.example/x\n    tags: { strategy: latest }\n  - id: a\n    image: r.example/y\n    tags: { strategy: latest }\n`,
      /rules\[1\]\.id: rule id a is used twice/,
    ],
    ["apiVersion: copa.sh/v1alpha1\nkind: PatchConfig\nimages: []\n", /not a rules file/],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(
      () => parseRules(text, "rules.yaml"),
      (e) => isSutureError(e) && e.code === "USAGE" && pattern.test(e.message) && !e.message.includes("\n"),
      text,
    );
  }
  assert.throws(
    () => ruleFromJson({ id: "a", image: "r.example/x", tags: { strategy: "list" } }),
    /rule tags\.list: strategy list needs the tags to patch/,
  );
});
