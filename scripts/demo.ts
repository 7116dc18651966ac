// The README's demo: build (or reuse) a real old Debian bookworm image, move it through a real
// loopback registry and an OCI layout with suture, and show what suture sees inside it.
// `suture patch` is not wired yet (issue 3); the demo will grow into a patch when it is.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labImage, pendingSecurityFixes } from "../test/lab/images.ts";
import { startRegistry } from "../test/lab/registry.ts";

const suture = join(import.meta.dirname, "../bin/suture");
const sh = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  execFileSync(suture, args, { stdio: "inherit", env: { ...process.env, ...env } });

console.log("» building or reusing the lab image bookwormNginx (first run: ~1-2 minutes)");
const lab = await labImage("bookwormNginx");
const registry = await startRegistry({ auth: "htpasswd" });
const work = mkdtempSync(join(tmpdir(), "suture-demo-"));
try {
  const env = { DOCKER_CONFIG: registry.dockerConfigDir };
  const ref = `${registry.host}/demo/nginx:bookworm`;
  console.log(`» suture copy ${lab.reference} ${ref}`);
  sh(["copy", "--progress", "plain", lab.reference, ref], env);
  console.log(`» suture copy ${ref} oci:${work}/out:bookworm`);
  sh(["copy", "--progress", "plain", ref, `oci:${work}/out:bookworm`], env);
  console.log(`» suture inspect ${ref}`);
  sh(["inspect", ref], env);
  const fixes = await pendingSecurityFixes("bookwormNginx");
  console.log(`\n${fixes.length} packages in this image have fixes waiting in bookworm-security, e.g.:`);
  for (const f of fixes.slice(0, 8)) console.log(`  ${f.name.padEnd(20)} ${f.installed} → ${f.fixed}`);
} finally {
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}
