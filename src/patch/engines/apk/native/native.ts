import { join } from "node:path";
import { readApkConfig, worldTags } from "../../../../distro/apk/config.ts";
import {
  INSTALLED_DB_PATH,
  installedVersionsOf,
  readInstalledDbInRoot,
} from "../../../../distro/apk/installed-db.ts";
import { SutureError } from "../../../../errors/errors.ts";
import { withStep } from "../../../../progress/events.ts";
import { assertCanRun } from "../../../../sandbox/emulation.ts";
import {
  beginApply,
  type EngineContext,
  type EnginePlan,
  type EngineResult,
  type EngineSandbox,
  type InstalledVersions,
  type PatchEngine,
  type Targets,
} from "../../engine.ts";
import { trustedKeys } from "../keys.ts";
import { downloadApkPackages } from "./fetch.ts";
import { installApkPackages } from "./install.ts";
import { apkArchFor, openApkRepositories } from "./repositories.ts";
import { type ApkInstallChoice, resolveApkUpgrade } from "./resolve.ts";
import { hasShell } from "./scripts.ts";

/** The native engine's plan: the resolved packages with their verified index entries. */
interface ApkPlan extends EnginePlan {
  choices: ApkInstallChoice[];
  /** Installed packages apk would remove with the change (see resolve.ts). */
  remove: string[];
  /** apk's architecture name, the repositories' subdirectory. */
  arch: string;
  /** Installed versions as the plan read them. */
  before: InstalledVersions;
  /** Whether the image has a shell for the packages' scripts (install.ts runs them in runc). */
  runScripts: boolean;
}

/**
 * suture's own apk engine: resolve the targets against the image's signed repository indexes
 * (resolve.ts, as apk's solver would), download the packages and prove each is the one its
 * index lists (fetch.ts), then install them into the sandbox's root as apk does (install.ts),
 * running their scripts with the image's own shell when it has one. Needs no apk in the image,
 * so it also patches images without a shell or apk (Chainguard static, distroless apk images).
 */
export const nativeApkEngine: PatchEngine = {
  kind: "native",
  description: "updating apk packages with suture's apk engine",
  plan: planNative,
  apply: (sandbox, targets, ctx, plan) => applyNative(sandbox, targets, ctx, plan),
};

/** The engine's cache root under `--cache-dir`. */
const cacheRoot = (ctx: EngineContext) => join(ctx.cacheDir, "apk-native");

const readInstalled = (root: string) =>
  readInstalledDbInRoot(
    root,
    () =>
      new SutureError(
        "UNSUPPORTED_OS",
        `the image has no ${INSTALLED_DB_PATH}, so it has no apk packages to patch`,
      ),
  );

/**
 * What the engine would install, resolved against the image's verified repositories, without
 * downloading or changing anything (`--dry-run`, and the result cache's key).
 */
async function planNative(sandbox: EngineSandbox, targets: Targets, ctx: EngineContext): Promise<ApkPlan> {
  const root = sandbox.mergedDir;
  const { progress } = ctx;
  const config = await readApkConfig(root, ctx.mirrors);
  const arch = apkArchFor(ctx.platform, config);
  const installed = await readInstalled(root);
  const { keyring } = await trustedKeys(config, ctx.keyringFiles ?? [], ctx.progress);
  const runScripts = hasShell(root);
  // Opened and resolved in one call so the indexes (Alpine's community one is tens of MB parsed)
  // can be collected once the resolution is made.
  const resolution = await (async () => {
    const { repositories } = await withStep(
      progress,
      "repositories",
      "verifying the image's apk repositories",
      () =>
        openApkRepositories(config.repositories, {
          arch,
          cacheDir: cacheRoot(ctx),
          keyring,
          pinnedTags: worldTags(config.world),
          progress,
          signal: ctx.signal,
        }),
    );
    for (const r of repositories)
      progress({
        type: "info",
        message: `apk repository ${r.repository.url}: ${r.index.packages.length} packages${r.index.description ? ` (${r.index.description})` : ""}, signed by ${r.index.signedBy}`,
      });
    return resolveApkUpgrade({
      installed: installed.map((p) => p.info),
      indexes: repositories.map((r) => ({ repository: r.repository, entries: r.index.packages })),
      targets,
      world: config.world,
    });
  })();
  const remove = resolution.remove.map((r) => r.name);
  return {
    choices: resolution.install,
    remove,
    arch,
    before: installedVersionsOf(installed),
    runScripts,
    install: resolution.install.map((c) => ({
      name: c.entry.name,
      ...(c.from === undefined ? {} : { from: c.from }),
      to: c.entry.version,
      reason: c.reason === "target" ? "target" : c.why,
      // The index's C: names exactly one build (it covers the control segment, whose datahash
      // covers the data).
      digest: c.entry.checksum,
    })),
    failed: resolution.failed,
    warnings: [
      ...config.warnings,
      ...resolution.warnings,
      ...resolution.remove.map((r) => `${r.name} ${r.version} is removed: ${r.why}`),
    ],
    reuseKey: [`scripts=${runScripts}`, `arch=${arch}`, `remove=${remove.join(",")}`],
  };
}

function isApkPlan(plan: EnginePlan | undefined): plan is ApkPlan {
  return plan !== undefined && "choices" in plan && "before" in plan && "arch" in plan;
}

async function applyNative(
  sandbox: EngineSandbox,
  targets: Targets,
  ctx: EngineContext,
  given: EnginePlan | undefined,
): Promise<EngineResult> {
  const plan = isApkPlan(given) ? given : await planNative(sandbox, targets, ctx);
  const { progress } = ctx;
  const { warnings, warn, failed } = beginApply(plan, ctx);
  const { before, choices } = plan;
  if (choices.length === 0 && plan.remove.length === 0)
    return { before, after: before, failed, warnings, scriptsMs: 0 };
  // Scripts run in the image's own shell; a foreign architecture then needs QEMU, checked before
  // anything is downloaded.
  if (plan.runScripts) await assertCanRun(ctx.platform);

  const packages = await withStep(progress, "download", `downloading ${choices.length} apk packages`, () =>
    downloadApkPackages(choices, { arch: plan.arch, cacheDir: cacheRoot(ctx), progress, signal: ctx.signal }),
  );
  const items = choices.map((c, i) => ({ pkg: packages[i]!, entry: c.entry, repository: c.repository.url }));
  const installed = await withStep(
    progress,
    "install",
    `installing ${choices.length} apk packages into the image`,
    () =>
      installApkPackages(items, plan.remove, {
        sandbox,
        runScripts: plan.runScripts,
        progress,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
        ...(ctx.timeoutMs === undefined ? {} : { timeoutMs: ctx.timeoutMs }),
      }),
  );
  for (const w of installed.warnings) warn(w);
  for (const c of choices)
    progress({
      type: "package",
      name: c.entry.name,
      ...(c.from === undefined ? {} : { from: c.from }),
      to: c.entry.version,
      status: "updated",
      ...(c.reason === "target" ? {} : { detail: c.why }),
    });
  const after = installedVersionsOf(await readInstalled(sandbox.mergedDir));
  // Whether every target reached its fixed version is checked by the pipeline (validateTargets).
  return { before, after, failed, warnings, scriptsMs: installed.scriptsMs };
}
