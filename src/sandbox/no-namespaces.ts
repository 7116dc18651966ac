import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ownersRecorded, recordOwnersInstead } from "../fs/owners.ts";
import { execTool } from "./exec.ts";
import { needsUserNamespace, reexecInUserNamespace } from "./userns.ts";

/**
 * The no-namespaces patch mode (issue 16, mode 3): a caller that is not root and cannot create a
 * user namespace (a pod with the default seccomp profile, no CAP_SYS_ADMIN) still patches, with
 * the native engines only: layers are extracted as the caller with their real facts recorded,
 * the engine works in a private copy of the merged layers (plain-tree.ts), the patch layer is
 * that copy's difference from the layers, and no code of the image runs.
 *
 * Selected by the environment variable `SUTURE_PATCH_MODE=no-namespaces`: the CLI sets it for
 * itself when a non-root caller cannot create a user namespace (and a caller may set it to force
 * the mode, e.g. tests, or a CI job that wants no namespaces even where they work). The library
 * (`patchImage`) reads it at the start of a patch.
 */
export const PATCH_MODE_ENV = "SUTURE_PATCH_MODE";
export const NO_NAMESPACES = "no-namespaces";

/** Whether this process patches in mode 3; switches owner recording on when it does. */
export function enterNoNamespacesModeIfSelected(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env[PATCH_MODE_ENV] === NO_NAMESPACES) recordOwnersInstead();
  return ownersRecorded();
}

/** Whether this process patches in mode 3 (after enterNoNamespacesModeIfSelected). */
export function inNoNamespacesMode(): boolean {
  return ownersRecorded();
}

/**
 * For a non-root CLI patch: mode 3 when it is forced, or when this user cannot mount an overlay in
 * a user namespace of its own (what mode 2's re-run needs); false: re-run in a user namespace.
 * Sets the environment variable, so the library and any child see the same choice.
 */
export async function chooseNoNamespaces(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const forced = env[PATCH_MODE_ENV];
  if (forced === NO_NAMESPACES) return true;
  if (forced !== undefined && forced !== "") return false;
  // Mode 2 needs an overlay mount in the namespace, not only the namespace: some hosts allow the
  // one without the other (kernels before 5.11; AppArmor's unprivileged-userns restriction).
  if ((await probeOverlayInUserNamespace()).ok) return false;
  env[PATCH_MODE_ENV] = NO_NAMESPACES;
  return true;
}

/** Mount an overlay in a new user + mount namespace, as the user-namespace mode would. */
export async function probeOverlayInUserNamespace(): Promise<{ ok: boolean; why: string }> {
  const dir = await mkdtemp(join(process.env.TMPDIR || tmpdir(), "suture-probe-"));
  try {
    for (const d of ["lower", "upper", "work", "merged"]) await mkdir(join(dir, d));
    const opts = `lowerdir=${dir}/lower,upperdir=${dir}/upper,workdir=${dir}/work,userxattr`;
    const args = ["--user", "--map-root-user", "--mount", "mount", "-t", "overlay", "-o", opts, "overlay"];
    const r = await execTool("unshare", [...args, join(dir, "merged")]).catch((e: NodeJS.ErrnoException) => ({
      code: -1,
      stderr: e.code === "ENOENT" ? "unshare not found" : String(e),
    }));
    const why = r.stderr.trim().split("\n")[0] || `exit ${r.code}`;
    return {
      ok: r.code === 0,
      why: r.code === 0 ? "" : `cannot mount overlayfs in a user namespace: ${why}`,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Root that cannot mount (a container's root without CAP_SYS_ADMIN, e.g. Docker's defaults): root
 * mode would fail at its first overlay mount, so the CLI patches in mode 3 instead, unless
 * SUTURE_PATCH_MODE names another mode. Inside mode 2's namespace root holds every capability.
 */
export async function rootCannotMount(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  if (process.geteuid?.() !== 0 || (env[PATCH_MODE_ENV] ?? "") !== "") return false;
  const status = await readFile("/proc/self/status", "utf8").catch(() => "");
  const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1] ?? "0"}`);
  const CAP_SYS_ADMIN = 21n;
  if (((capEff >> CAP_SYS_ADMIN) & 1n) === 1n) return false;
  env[PATCH_MODE_ENV] = NO_NAMESPACES;
  return true;
}

/** The `--progress` mode line of mode 3. */
export const NO_NAMESPACES_MODE_LINE =
  "mode: no-namespaces (no root, no user namespace: native engines in a private working tree, owners from the layers' metadata, no scripts run)";

/**
 * Settle where a patching command (patch, bulk, serve, worker) runs, before it does anything:
 * a non-root caller re-runs the whole command as root of a user namespace (mode 2) unless it
 * cannot mount an overlay there or mode 3 is forced (then mode 3 here); root without
 * CAP_SYS_ADMIN takes mode 3. Returns the re-run's exit code when the command ran again in a
 * namespace (the caller only hands it on), undefined when the command goes on in this process.
 */
export async function reexecOrSettleMode(): Promise<number | undefined> {
  if (needsUserNamespace() && !(await chooseNoNamespaces())) return (await reexecInUserNamespace()).code;
  await rootCannotMount();
  return undefined;
}
