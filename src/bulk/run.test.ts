/**
 * runBulk's decisions (discovery over a paginated tag list, collisions, failures that only warn,
 * fail-open skip checks) against an in-process registry fake: no sockets, so this runs in the unit
 * tier. test/e2e/cli-bulk.test.ts drives the same runs against a real registry and real patches.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { MockAgent } from "undici";
import { mockAgent } from "../../test/fakes/http-faults.ts";
import { parseBulkConfig } from "./config.ts";
import { type BulkEvent, runBulk } from "./run.ts";

const ORIGIN = "https://registry.test";
let dockerConfig: string;
before(async () => {
  // No credentials from the machine's own Docker config.
  dockerConfig = await mkdtemp(join(tmpdir(), "suture-bulk-run-"));
});
after(async () => {
  await rm(dockerConfig, { recursive: true, force: true });
});

/** A registry with `repos` (repository → tags), tag lists served two to a page with Link headers. */
function registry(repos: Record<string, string[]>, answers: Record<string, number> = {}): MockAgent {
  const agent = mockAgent();
  const pool = agent.get(ORIGIN);
  pool.intercept({ path: "/v2/" }).reply(200, "{}").persist();
  for (const [path, status] of Object.entries(answers))
    pool
      .intercept({ path, method: () => true })
      .reply(status, "{}")
      .persist();
  for (const [repo, tags] of Object.entries(repos)) {
    pool
      .intercept({ path: (p) => p.startsWith(`/v2/${repo}/tags/list`) })
      .reply((req) => {
        const url = new URL(req.path, ORIGIN);
        const last = url.searchParams.get("last");
        const start = last ? tags.indexOf(last) + 1 : 0;
        const page = tags.slice(start, start + 2);
        const more = start + 2 < tags.length;
        return {
          statusCode: 200,
          data: JSON.stringify({ name: repo, tags: page }),
          responseOptions: {
            headers: more ? { link: `</v2/${repo}/tags/list?n=2&last=${page.at(-1)}>; rel="next"` } : {},
          },
        };
      })
      .persist();
    pool
      .intercept({ path: (p) => p.startsWith(`/v2/${repo}/manifests/`), method: "HEAD" })
      .reply((req) => {
        const tag = req.path.slice(req.path.lastIndexOf("/") + 1);
        return tags.includes(tag)
          ? {
              statusCode: 200,
              data: "",
              responseOptions: {
                headers: {
                  "docker-content-digest": `sha256:${"a".repeat(64)}`,
                  "content-type": "application/vnd.oci.image.manifest.v1+json",
                },
              },
            }
          : { statusCode: 404, data: "" };
      })
      .persist();
  }
  // Anything else is not there (interceptors match in the order they were added).
  pool
    .intercept({ path: () => true, method: () => true })
    .reply(404, JSON.stringify({ errors: [{ code: "NAME_UNKNOWN", message: "repository name not known" }] }))
    .persist();
  return agent;
}

async function dryRun(configText: string, agent: MockAgent) {
  const events: BulkEvent[] = [];
  const result = await runBulk(parseBulkConfig(configText, "bulk.yaml"), {
    dryRun: true,
    transport: { dispatcher: agent, dockerConfig },
    onEvent: (e) => events.push(e),
  });
  return { result, events };
}

const HEAD = "apiVersion: copa.sh/v1alpha1\nkind: PatchConfig\n";

test("discovery follows the tag list's pages; an image listed twice runs once; two aiming at one tag conflict", async () => {
  const agent = registry({
    "lib/app": ["1.0", "1.1", "1.2", "1.2-rc1", "2.0", "edge"],
    "lib/web": ["1.2"],
    "out/app": ["1.2-p", "1.2-p-1"],
  });
  const { result, events } = await dryRun(
    `${HEAD}target: { registry: registry.test/out, tag: "{{ .SourceTag }}-p" }
images:
  - { name: app, image: registry.test/lib/app, tags: { strategy: pattern, pattern: "^1\\\\.", maxTags: 2 } }
  - { name: again, image: registry.test/lib/app, tags: { strategy: list, list: ["1.1"] } }
  - { name: app-latest, image: registry.test/lib/app, tags: { strategy: latest } }
  - { name: web, image: registry.test/lib/web, tags: { strategy: list, list: ["1.2"] }, target: { registry: registry.test/out2 } }
  - { name: clash, image: registry.test/other/app, tags: { strategy: list, list: ["1.2"] } }
`,
    agent,
  );
  const discovered = events.find((e) => e.type === "discovered");
  assert.ok(discovered);
  assert.deepEqual(
    result.jobs.map((j) => [j.name, j.source, j.status, j.target ?? j.reason]),
    [
      ["app", "registry.test/lib/app:1.1", "would-patch", "registry.test/out/app:1.1-p"],
      // 1.2-p and 1.2-p-1 exist: the next patch of 1.2 is -2.
      ["app", "registry.test/lib/app:1.2", "would-patch", "registry.test/out/app:1.2-p-2"],
      ["app-latest", "registry.test/lib/app:2.0", "would-patch", "registry.test/out/app:2.0-p"],
      ["web", "registry.test/lib/web:1.2", "would-patch", "registry.test/out2/web:1.2-p"],
    ],
  );
  // "again" names a tag "app" already patches: once is enough, and it is said.
  assert.ok(result.warnings.some((w) => /again: registry\.test\/lib\/app:1\.1 is listed twice/.test(w)));
  // other/app does not exist: its listed tag is a warning, not a job.
  assert.ok(
    result.warnings.some((w) => /clash: registry\.test\/other\/app:1\.2 does not exist/.test(w)),
    result.warnings.join("\n"),
  );
  assert.ok(result.warnings.some((w) => /app: tag "1\.2-rc1" is a prerelease/.test(w)));
});

test("two sources whose patched tags are one tag: the second fails and says how to tell them apart", async () => {
  const agent = registry({ "a/app": ["1"], "b/app": ["1"] });
  const { result } = await dryRun(
    `${HEAD}target: { registry: registry.test/out }
images:
  - { name: a, image: registry.test/a/app, tags: { strategy: list, list: ["1"] } }
  - { name: b, image: registry.test/b/app, tags: { strategy: list, list: ["1"] } }
`,
    agent,
  );
  assert.deepEqual(
    result.jobs.map((j) => [j.name, j.status]),
    [
      ["a", "would-patch"],
      ["b", "failed"],
    ],
  );
  assert.match(
    result.jobs[1]!.reason!,
    /its patched tag registry\.test\/out\/app:1-patched is also the target of registry\.test\/a\/app:1: give one of them its own target\.registry or target\.tag/,
  );
});

test("a repository that cannot be listed is a warning and no jobs; a target that cannot be listed patches under the base tag", async () => {
  const agent = registry({ "lib/app": ["1"] }, { "/v2/secret/app/tags/list?n=1000": 403 });
  const { result } = await dryRun(
    `${HEAD}images:
  - { name: gone, image: registry.test/none, tags: { strategy: latest } }
  - { name: app, image: registry.test/lib/app, tags: { strategy: list, list: ["1"] }, target: { registry: registry.test/secret } }
`,
    agent,
  );
  assert.ok(
    result.warnings.some((w) => /^gone: cannot discover tags: .*not found/.test(w)),
    result.warnings.join("\n"),
  );
  assert.deepEqual(
    result.jobs.map((j) => [j.name, j.status, j.target]),
    [["app", "would-patch", "registry.test/secret/app:1-patched"]],
  );
  assert.match(
    result.jobs[0]!.warnings[0]!,
    /could not list the tags of registry\.test\/secret\/app .*: patching as 1-patched/,
  );
});

test("nothing to patch is a warning and an empty result, not an error", async () => {
  const { result } = await dryRun(
    `${HEAD}images:\n  - { name: app, image: registry.test/lib/app, tags: { strategy: latest } }\n`,
    registry({ "lib/app": ["edge", "nightly"] }),
  );
  assert.deepEqual(result.jobs, []);
  assert.ok(result.warnings.includes("no tags to patch"));
});
