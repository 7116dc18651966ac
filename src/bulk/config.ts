/**
 * copa's bulk `PatchConfig` (apiVersion copa.sh/v1alpha1): which repositories to patch, how their
 * tags are chosen, and where the patched images go. Read with the `yaml` package and checked with
 * zod; every mistake is one line naming the file, line and field, and how to fix it.
 */
import { LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import { readConfigText } from "../fs/read-capped.ts";
import type { Platform } from "../oci/manifest.ts";
import { formatPlatform, parsePlatform } from "../oci/platform.ts";
import { type ImageReference, parseReference } from "../ref/reference.ts";

export const API_VERSION = "copa.sh/v1alpha1";
export const KIND = "PatchConfig";
/** copa's default target tag template. */
export const DEFAULT_TAG_TEMPLATE = "{{ .SourceTag }}-patched";
/** A PatchConfig lists images, not data: a larger file is a mistake (or an attack on the parser). */
const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * The platforms copa's `--platform` accepts (copa's `validPlatforms`); a bulk config naming another
 * would be refused by copa too.
 */
export const COPA_PLATFORMS = [
  "linux/386",
  "linux/amd64",
  "linux/arm",
  "linux/arm/v5",
  "linux/arm/v6",
  "linux/arm/v7",
  "linux/arm64",
  "linux/arm64/v8",
  "linux/ppc64le",
  "linux/s390x",
  "linux/riscv64",
] as const;

export type TagStrategy =
  | { strategy: "list"; list: string[] }
  | { strategy: "pattern"; pattern: RegExp; maxTags?: number; exclude: string[] }
  | { strategy: "latest"; exclude: string[] };

/** One `images:` entry, with the global target merged in field by field. */
export interface BulkImageSpec {
  /** Display name (`name:`). */
  name: string;
  /** The source repository (no tag). */
  repository: ImageReference;
  tags: TagStrategy;
  /** Platforms to patch (`platforms:`); undefined = every linux platform of an index. */
  platforms?: Platform[];
  /** Where the patched images go: `<target.registry>/<last segment>` or the source repository. */
  targetRepository: ImageReference;
  tagTemplate: TagTemplate;
}

export interface BulkConfig {
  file: string;
  images: BulkImageSpec[];
}

/** A parsed `target.tag`: copa's Go text/template, of which a tag template only ever uses `.SourceTag`. */
export interface TagTemplate {
  readonly source: string;
  render(sourceTag: string): string;
}

const TAG = /^[\w][\w.-]{0,127}$/;

/**
 * Parse copa's tag template. Go's text/template would accept far more (pipelines, functions,
 * conditionals), but copa executes it with one field, `SourceTag`, so anything else either fails in
 * copa at run time or is not a tag template at all: it is refused here, before any work.
 * `{{- … -}}` trim markers remove the whitespace beside the action, as in Go.
 */
export function parseTagTemplate(source: string): TagTemplate {
  type Piece = { text: string } | { sourceTag: true };
  const pieces: Piece[] = [];
  let rest = source;
  for (;;) {
    const open = rest.indexOf("{{");
    if (open < 0) {
      pieces.push({ text: rest });
      break;
    }
    const close = rest.indexOf("}}", open + 2);
    if (close < 0) throw templateError(source, "a {{ is not closed by }}");
    let before = rest.slice(0, open);
    let action = rest.slice(open + 2, close);
    let after = rest.slice(close + 2);
    // Go: "{{- " trims the text before, " -}}" the text after (the marker needs a space beside it).
    if (/^-\s/.test(action)) {
      before = before.trimEnd();
      action = action.slice(1);
    }
    if (/\s-$/.test(action)) {
      after = after.trimStart();
      action = action.slice(0, -1);
    }
    if (action.trim() !== ".SourceTag") {
      throw templateError(
        source,
        `${quoteUntrusted(`{{${rest.slice(open + 2, close)}}}`)} is not {{ .SourceTag }}, the only field a tag template has`,
      );
    }
    pieces.push({ text: before }, { sourceTag: true });
    rest = after;
  }
  return {
    source,
    render: (sourceTag) => pieces.map((p) => ("text" in p ? p.text : sourceTag)).join(""),
  };
}

function templateError(source: string, why: string): SutureError {
  return new SutureError("USAGE", `tag template ${quoteUntrusted(source)}: ${why}`);
}

/** The patched image's repository: copa's rule, `<target.registry>/<last path segment of the source>`. */
export function targetRepositoryFor(source: ImageReference, registry: string | undefined): ImageReference {
  if (!registry) return { registry: source.registry, repository: source.repository };
  const last = source.repository.slice(source.repository.lastIndexOf("/") + 1);
  const ref = parseReference(`${registry.replace(/\/+$/, "")}/${last}`, { defaultTag: false });
  return { registry: ref.registry, repository: ref.repository };
}

// --- the document ------------------------------------------------------------------------------

const Target = z.strictObject({
  registry: z.string().min(1, "give a registry (and namespace), e.g. ghcr.io/myorg").optional(),
  tag: z.string().min(1, 'give a tag template, e.g. "{{ .SourceTag }}-patched"').optional(),
});

const Tags = z.strictObject({
  strategy: z.enum(["list", "pattern", "latest"], {
    error: "strategy must be list, pattern or latest",
  }),
  list: z.array(z.string()).optional(),
  pattern: z.string().optional(),
  maxTags: z.number().int("maxTags must be a whole number").positive("maxTags must be 1 or more").optional(),
  exclude: z.array(z.string()).optional(),
});

export const ImageEntry = z.strictObject({
  name: z.string().min(1, "give the image a display name"),
  image: z.string().min(1, "give the source repository, e.g. docker.io/library/nginx"),
  tags: Tags,
  platforms: z.array(z.string()).min(1, "list at least one platform, or leave platforms out").optional(),
  target: Target.optional(),
});

const Document = z.strictObject({
  apiVersion: z.string(),
  kind: z.string(),
  target: Target.optional(),
  images: z.array(ImageEntry).min(1, "list at least one image"),
});

export type ImageEntry = z.infer<typeof ImageEntry>;

export type Path = readonly (string | number)[];

/** `images[1].tags.pattern`: a path as a user would find it in the file. */
function fieldName(path: Path): string {
  return path.reduce<string>(
    (out, p) => (typeof p === "number" ? `${out}[${p}]` : out ? `${out}.${p}` : p),
    "",
  );
}

/** Read and check a PatchConfig file. */
export async function readBulkConfig(file: string): Promise<BulkConfig> {
  return parseBulkConfig(await readConfigText(file, MAX_CONFIG_BYTES, `bulk config ${file}`), file);
}

/** Check a PatchConfig's text; `file` names it in messages. */
export function parseBulkConfig(text: string, file: string): BulkConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const at = (offset: number | undefined) => (offset === undefined ? "" : `:${lines.linePos(offset).line}`);
  const fail = (path: Path, why: string): never => {
    // A missing field is pointed at by its nearest existing parent.
    let range: [number, number, number] | undefined;
    for (let n = path.length; n >= 0 && !range; n--) {
      const node = n ? doc.getIn(path.slice(0, n), true) : doc.contents;
      range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    }
    const where = fieldName(path);
    throw new SutureError("USAGE", `${file}${at(range?.[0])}: ${where ? `${where}: ` : ""}${why}`);
  };
  const yamlError = doc.errors[0];
  if (yamlError) {
    const first = yamlError.message.split("\n")[0];
    throw new SutureError(
      "USAGE",
      `${file}${at(yamlError.pos[0])}: not valid YAML (${first}): fix the syntax`,
    );
  }
  const raw: unknown = doc.toJS({ maxAliasCount: 100 });
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    fail([], `not a PatchConfig: want a mapping with apiVersion: ${API_VERSION} and kind: ${KIND}`);
  }
  // The document's identity first: a file of another kind gets that said, not its field errors.
  const head = raw as { apiVersion?: unknown; kind?: unknown };
  if (head.apiVersion !== API_VERSION)
    fail(
      head.apiVersion === undefined ? [] : ["apiVersion"],
      `apiVersion must be ${API_VERSION}${head.apiVersion === undefined ? " (it is missing)" : `, not ${quoteUntrusted(String(head.apiVersion))}`}`,
    );
  if (head.kind !== KIND)
    fail(
      head.kind === undefined ? [] : ["kind"],
      `kind must be ${KIND}${head.kind === undefined ? " (it is missing)" : `, not ${quoteUntrusted(String(head.kind))}`}`,
    );
  const parsed = Document.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path.filter((p): p is string | number => typeof p !== "symbol");
    if (issue.code === "unrecognized_keys") {
      const key = issue.keys[0]!;
      fail([...path, key], `unknown field: remove it or check its spelling (see copa's PatchConfig)`);
    }
    if (issue.code === "invalid_type" && issue.input === undefined) fail(path, "is required");
    fail(path, issue.message);
  }
  const config = parsed.data!;
  const images = config.images.map((entry, i) =>
    imageSpecOf(entry, config.target, (path, why, global) =>
      fail(global ? ["target", ...path] : ["images", i, ...path], why),
    ),
  );
  return { file, images };
}

/**
 * One `images:` entry checked and resolved (`suture serve`'s rules reuse it): `fail` is given the
 * path inside the entry, or inside the global target (`global`) when that is where a field came from.
 */
export function imageSpecOf(
  entry: ImageEntry,
  globalTarget: { registry?: string; tag?: string } | undefined,
  fail: (path: Path, why: string, global?: boolean) => never,
): BulkImageSpec {
  const field = (...rest: (string | number)[]) => rest;
  const check = <T>(path: Path, f: () => T, global?: boolean): T => {
    try {
      return f();
    } catch (e) {
      return fail(path, e instanceof Error ? e.message : String(e), global);
    }
  };
  const repository = check(field("image"), () => parseReference(entry.image, { defaultTag: false }));
  if (repository.tag || repository.digest)
    fail(
      field("image"),
      `name the repository without ${repository.digest ? "a digest" : "a tag"} (${repository.registry}/${repository.repository}): tags come from tags:`,
    );
  const tags = strategyOf(entry.tags, (path, why) => fail(["tags", ...path], why));
  const platforms = entry.platforms?.map((p, j) => {
    const platform = check(field("platforms", j), () => parsePlatform(p));
    const name = formatPlatform(platform);
    if (!(COPA_PLATFORMS as readonly string[]).includes(name))
      fail(field("platforms", j), `${quoteUntrusted(p)} is not one of ${COPA_PLATFORMS.join(", ")}`);
    return platform;
  });
  // copa merges the image's target over the global one field by field.
  const registry = entry.target?.registry ?? globalTarget?.registry;
  const registryGlobal = !entry.target?.registry;
  const registryPath = registryGlobal ? field("registry") : field("target", "registry");
  const template = entry.target?.tag ?? globalTarget?.tag ?? DEFAULT_TAG_TEMPLATE;
  const templateGlobal = !entry.target?.tag;
  const templatePath = templateGlobal ? field("tag") : field("target", "tag");
  const targetRepository = check(
    registryPath,
    () => targetRepositoryFor(repository, registry),
    registryGlobal,
  );
  const tagTemplate = check(templatePath, () => parseTagTemplate(template), templateGlobal);
  // A template that cannot make a valid tag is found now, not after the first job patched.
  const sample = tagTemplate.render("1.0");
  if (!TAG.test(sample))
    fail(
      templatePath,
      `${quoteUntrusted(template)} makes ${quoteUntrusted(sample)} from tag 1.0, which is not a valid tag (letters, digits, _ . -; at most 128)`,
      templateGlobal,
    );
  if (
    targetRepository.registry === repository.registry &&
    targetRepository.repository === repository.repository &&
    sample === "1.0"
  )
    fail(
      templatePath,
      "the patched tag would replace the source tag: add a suffix such as -patched",
      templateGlobal,
    );
  return {
    name: entry.name,
    repository: { registry: repository.registry, repository: repository.repository },
    tags,
    platforms,
    targetRepository,
    tagTemplate,
  };
}

function strategyOf(tags: z.infer<typeof Tags>, fail: (path: Path, why: string) => never): TagStrategy {
  const notFor = (key: "list" | "pattern" | "maxTags" | "exclude", valid: string) => {
    if (tags[key] !== undefined) fail([key], `applies to strategy ${valid} only: remove it`);
  };
  const validTags = (key: "list" | "exclude", values: string[]) => {
    values.forEach((t, i) => {
      if (!TAG.test(t)) fail([key, i], `${quoteUntrusted(t)} is not a valid tag`);
    });
    return values;
  };
  switch (tags.strategy) {
    case "list":
      notFor("pattern", "pattern");
      notFor("maxTags", "pattern");
      notFor("exclude", "pattern or latest");
      if (!tags.list?.length) fail(["list"], 'strategy list needs the tags to patch, e.g. list: ["1.25.3"]');
      return { strategy: "list", list: [...new Set(validTags("list", tags.list!))] };
    case "pattern": {
      notFor("list", "list");
      if (!tags.pattern)
        fail(["pattern"], 'strategy pattern needs a regular expression, e.g. pattern: "^1\\.25\\.[0-9]+$"');
      let pattern: RegExp;
      try {
        // Go's RE2 and JavaScript agree on the syntax tag patterns use; `u` refuses what they do not.
        pattern = new RegExp(tags.pattern!, "u");
      } catch (e) {
        return fail(["pattern"], `not a valid regular expression (${(e as Error).message})`);
      }
      return {
        strategy: "pattern",
        pattern,
        maxTags: tags.maxTags,
        exclude: validTags("exclude", tags.exclude ?? []),
      };
    }
    case "latest":
      notFor("list", "list");
      notFor("pattern", "pattern");
      notFor("maxTags", "pattern");
      return { strategy: "latest", exclude: validTags("exclude", tags.exclude ?? []) };
  }
}
