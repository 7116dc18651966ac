/**
 * deploy/: the Kubernetes manifests and the Dockerfile stay in step with the CLI. Every flag a
 * manifest passes to `suture serve`/`worker` is one the command accepts (a renamed flag would
 * crash-loop the pods), the token and credentials come from the Secret, never inline, and the
 * Dockerfile's default command names flags serve has.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { SUTURE } from "../lab/cli.ts";

const run = promisify(execFile);
const root = join(import.meta.dirname, "../..");

async function flagsOf(command: string): Promise<Set<string>> {
  const { stdout } = await run(SUTURE, [command, "--help"]);
  return new Set([...stdout.matchAll(/(?:^|\s)(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
}

test("every flag the manifests and the Dockerfile pass exists; secrets come from the Secret", async () => {
  const known = { serve: await flagsOf("serve"), worker: await flagsOf("worker") };
  const text = await readFile(join(root, "deploy/kubernetes/suture.yaml"), "utf8");
  const docs = parseAllDocuments(text).map((d) => d.toJS() as Record<string, any>);
  const deployments = docs.filter(
    (d) =>
      d.kind === "Deployment" && d.metadata.name.startsWith("suture-") && d.metadata.name !== "suture-redis",
  );
  assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), ["suture-serve", "suture-worker"]);
  for (const d of deployments) {
    const [command, ...args] = d.spec.template.spec.containers[0].args as string[];
    assert.ok(command === "serve" || command === "worker", command);
    for (const arg of args) {
      const flag = arg.split("=")[0]!;
      assert.ok(
        known[command as "serve" | "worker"].has(flag),
        `${d.metadata.name}: suture ${command} has no ${flag}`,
      );
    }
    assert.ok(
      args.some((a) => a.startsWith("--redis=")),
      `${d.metadata.name} shares the Redis queue`,
    );
    const env = d.spec.template.spec.containers[0].env ?? [];
    for (const e of env) assert.ok(e.valueFrom?.secretKeyRef, `${e.name} comes from the Secret`);
  }
  assert.doesNotMatch(text, /token:\s*\S{16,}/, "no token inline");

  const dockerfile = await readFile(join(root, "deploy/Dockerfile"), "utf8");
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
  assert.equal(cmd[0], "serve");
  for (const arg of cmd.filter((a) => a.startsWith("--")))
    assert.ok(known.serve.has(arg), `serve has no ${arg}`);
});
