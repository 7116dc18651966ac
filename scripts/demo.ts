// The README's demo: build (or reuse) a real old Debian bookworm image, move it through a real
// loopback registry and an OCI layout with suture, and show what suture sees inside it.
// Then patch it registry → registry from a Trivy-format report of its real pending fixes.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labImage, trivyReportFor } from "../test/lab/images.ts";
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
  const { path: report } = await trivyReportFor("bookwormNginx", {
    only: ["libssl3", "openssl", "libexpat1"],
    outFile: join(work, "report.json"),
  });
  console.log(`» suture report ${report}`);
  sh(["report", report]);
  console.log(`» suture patch -i ${ref} -r report.json --push -o vex.json`);
  sh(["patch", "-i", ref, "-r", report, "--push", "-o", join(work, "vex.json"), "--progress", "plain"], env);
  console.log(`» suture inspect ${registry.host}/demo/nginx:bookworm-patched`);
  sh(["inspect", `${registry.host}/demo/nginx:bookworm-patched`], env);
} finally {
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}
