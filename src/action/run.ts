import packageJson from "../../package.json" with { type: "json" };
import { parseDuration, parseMirrors } from "../cli/options.ts";
import { SutureError } from "../errors/errors.ts";
import { patchImage } from "../index.ts";
import type { EngineChoice } from "../patch/engines/engine.ts";
import type { PatchResult } from "../patch/patch.ts";
import type { ProgressSink } from "../progress/events.ts";
import { parseReference } from "../ref/reference.ts";
import { SBOM_FORMATS, type SbomFormat } from "../sbom/sbom.ts";
import { appendSummary, type Env, getBooleanInput, getInput, getListInput, setOutputs } from "./runner-io.ts";
import { patchSummary } from "./summary.ts";

/** The Action's inputs, checked: everything a user can get wrong fails here, before any work. */
export interface ActionInputs {
  image: string;
  report?: string;
  patchedTag?: string;
  timeout: string;
  timeoutMs: number;
  output?: string;
  push: boolean;
  platforms: string[];
  engine: EngineChoice;
  mirrors: Record<string, string>;
  sbom?: string;
  sbomFormat: SbomFormat;
  attach: boolean;
  signKey?: string;
}

const ENGINES: readonly EngineChoice[] = ["auto", "native", "sandbox"];

/** Read and check the `INPUT_*` variables (names as in action.yml). */
export function readInputs(env: Env): ActionInputs {
  const image = getInput(env, "image");
  if (!image) throw new SutureError("USAGE", "input image is required: the image reference to patch");
  const format = getInput(env, "format") || "openvex";
  if (format !== "openvex")
    throw new SutureError("USAGE", `input format is ${JSON.stringify(format)}: only openvex is supported`);
  const engine = (getInput(env, "engine") || "auto") as EngineChoice;
  if (!ENGINES.includes(engine))
    throw new SutureError(
      "USAGE",
      `input engine is ${JSON.stringify(engine)}: use one of ${ENGINES.join(", ")}`,
    );
  const sbomFormat = (getInput(env, "sbom-format") || "cyclonedx") as SbomFormat;
  if (!(SBOM_FORMATS as readonly string[]).includes(sbomFormat))
    throw new SutureError(
      "USAGE",
      `input sbom-format is ${JSON.stringify(sbomFormat)}: use one of ${SBOM_FORMATS.join(", ")}`,
    );
  const timeout = getInput(env, "timeout") || "5m";
  return {
    image,
    report: getInput(env, "image-report") || undefined,
    patchedTag: getInput(env, "patched-tag") || undefined,
    timeout,
    timeoutMs: parseDuration(timeout),
    output: getInput(env, "output") || undefined,
    push: getBooleanInput(env, "push"),
    platforms: getListInput(env, "platforms"),
    engine,
    mirrors: parseMirrors(getListInput(env, "mirror")),
    sbom: getInput(env, "sbom") || undefined,
    sbomFormat,
    attach: getBooleanInput(env, "attach"),
    signKey: getInput(env, "sign-key") || undefined,
  };
}

/**
 * What the step reports. `patched-image` is what was written pinned by digest, `registry/repo@sha256:…`
 * without the tag: every client takes that form, where skopeo, podman and buildah refuse a tag and
 * a digest together. `patched-reference` is the name it was written under (`registry/repo:tag`).
 * Both are empty when nothing needed patching (nothing was written). `vex` and `sbom` are the
 * files written, or empty.
 */
export function actionOutputs(result: PatchResult): Record<string, string> {
  const written = writtenNames(result);
  return {
    "patched-image": written?.pinned ?? "",
    "patched-reference": written?.name ?? "",
    vex: result.vexFile ?? "",
    sbom: result.sbomFile ?? "",
    status: result.status,
  };
}

/** The written image's name, and its digest-pinned form (the local engine keeps no manifest digest: its name). */
function writtenNames(result: PatchResult): { name: string; pinned: string } | undefined {
  if (result.status !== "patched" || !result.digest) return undefined;
  const registry = /^docker:\/\/(.*)$/.exec(result.target);
  if (registry) {
    const name = registry[1]!;
    const ref = parseReference(name);
    return { name, pinned: `${ref.registry}/${ref.repository}@${result.digest}` };
  }
  const daemon = /^docker-daemon:(.*)$/.exec(result.target);
  if (daemon) return { name: daemon[1]!, pinned: daemon[1]! };
  return { name: result.target, pinned: `${result.target}@${result.digest}` };
}

export interface RunActionOptions {
  progress?: ProgressSink;
  signal?: AbortSignal;
}

/**
 * The Action's work: read the inputs, patch (update-all without a report, every linux platform of
 * an index unless `platforms` narrows it), then write the outputs and the job summary. Failures
 * throw a SutureError; the entry turns it into an `::error::` line and an exit code.
 */
export async function runAction(env: Env, options: RunActionOptions = {}): Promise<PatchResult> {
  const inputs = readInputs(env);
  const controller = new AbortController();
  const timer = setTimeout(
    () =>
      controller.abort(
        new SutureError("TIMEOUT", `patching took longer than the timeout input ${inputs.timeout}`),
      ),
    inputs.timeoutMs,
  );
  const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
  // RUNNER_TEMP is the job's own scratch space, emptied after each job: the layer and package
  // caches live there rather than in a home directory another job (or root, under sudo) shares.
  const scratch = env.RUNNER_TEMP;
  try {
    const result = await patchImage(inputs.image, {
      report: inputs.report,
      tag: inputs.patchedTag,
      push: inputs.push,
      vexFile: inputs.output,
      sbomFile: inputs.sbom,
      sbomFormat: inputs.sbomFormat,
      attach: inputs.attach,
      signKeyFile: inputs.signKey,
      toolVersion: packageJson.version,
      timeoutMs: inputs.timeoutMs,
      platforms: inputs.platforms.length ? inputs.platforms : undefined,
      engine: inputs.engine,
      mirrors: inputs.mirrors,
      cacheDir: scratch ? `${scratch}/suture-cache` : undefined,
      tmpDir: scratch,
      dockerConfig: env.DOCKER_CONFIG,
      progress: options.progress,
      signal,
    });
    const outputs = actionOutputs(result);
    setOutputs(env, outputs);
    appendSummary(
      env,
      patchSummary({
        source: inputs.image,
        result,
        patchedImage: outputs["patched-image"] || undefined,
        patchedReference: outputs["patched-reference"] || undefined,
        pushed: inputs.push,
        vexFile: result.vexFile,
        sbomFile: result.sbomFile,
      }),
    );
    return result;
  } catch (e) {
    throw signal.aborted && signal.reason ? signal.reason : e;
  } finally {
    clearTimeout(timer);
  }
}
