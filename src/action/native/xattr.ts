/**
 * What the Action's bundle uses in place of `@napi-rs/xattr` (esbuild `alias` in
 * scripts/build-action.ts). The package finds its compiled binding in a per-platform npm package
 * under node_modules, which a runner does not have; Node has no xattr API of its own, and a
 * setfattr/getfattr per file would be both slow and a package the runner may lack. So the
 * linux-x64-gnu binding (what GitHub's hosted ubuntu runners are) is shipped beside the bundle
 * and loaded by path; any other host gets a one-line error naming what to use instead.
 */
import { createRequire } from "node:module";
import { SutureError } from "../../errors/errors.ts";

type Binding = typeof import("@napi-rs/xattr");

export const BINDING_FILE = "xattr.linux-x64-gnu.node";

let binding: Binding | undefined;

function load(): Binding {
  if (binding) return binding;
  if (process.platform !== "linux" || process.arch !== "x64" || !glibc())
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `the suture Action ships its xattr binding for linux x64 (glibc) only, and this runner is ${process.platform}/${process.arch}${process.platform === "linux" && !glibc() ? " (musl)" : ""}: run the job on an ubuntu x64 runner, or run suture from its sources (npm ci) there`,
    );
  // Relative to the bundle (dist/action/index.mjs), where build-action.ts copies it.
  binding = createRequire(import.meta.url)(`./${BINDING_FILE}`) as Binding;
  return binding;
}

function glibc(): boolean {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)
    ?.header;
  return Boolean(header?.glibcVersionRuntime);
}

export const setAttributeSync: Binding["setAttributeSync"] = (path, name, value) =>
  load().setAttributeSync(path, name, value);
export const getAttributeSync: Binding["getAttributeSync"] = (path, name) =>
  load().getAttributeSync(path, name);
export const listAttributesSync: Binding["listAttributesSync"] = (path) => load().listAttributesSync(path);
