import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { describeCause, redact, SutureError } from "../../errors/errors.ts";
import { describeFirstIssue } from "../../oci/manifest.ts";
import { DOCKER_HUB } from "../../ref/reference.ts";

/** Credentials for one registry, as found in a config file or returned by a credential helper. */
export interface Credentials {
  readonly username?: string;
  readonly password?: string;
  /** An OAuth2 refresh token (`identitytoken`, or a helper's answer with Username `<token>`). */
  readonly identityToken?: string;
  /** Where they came from, for messages: a file path or `docker-credential-NAME`. */
  readonly source: string;
}

export interface CredentialLookupOptions {
  /** Docker config directory (default $DOCKER_CONFIG, else ~/.docker). */
  dockerConfig?: string;
  /** Environment to read DOCKER_CONFIG, REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR and PATH from. */
  env?: NodeJS.ProcessEnv;
  homeDir?: string;
}

/** The key Docker stores Docker Hub credentials under, and sends to credential helpers. */
export const DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/";

const HELPER_TIMEOUT_MS = 30_000;
const HELPER_OUTPUT_CAP = 1024 * 1024;

/**
 * The fields of a Docker config.json (or a containers auth.json) that hold credentials; the file's
 * other fields pass unread. `null` stands for "not set", as Docker's own (Go) reader takes it.
 */
const AuthEntrySchema = z.looseObject({
  auth: z.string().nullish(),
  username: z.string().nullish(),
  password: z.string().nullish(),
  identitytoken: z.string().nullish(),
});
const AuthFileSchema = z.looseObject({
  auths: z.record(z.string(), AuthEntrySchema.nullable()).nullish(),
  credsStore: z.string().nullish(),
  credHelpers: z.record(z.string(), z.string()).nullish(),
});
type AuthEntry = z.infer<typeof AuthEntrySchema>;
type AuthFile = z.infer<typeof AuthFileSchema>;

/** What `docker-credential-NAME get` answers. */
const HelperAnswerSchema = z.looseObject({ Username: z.string().nullish(), Secret: z.string().nullish() });

/**
 * Find credentials for `registry` (a reference's registry, e.g. `docker.io`, `127.0.0.1:5000`).
 * Looks, in order, in the Docker config (`config.json` in `dockerConfig`, $DOCKER_CONFIG or
 * ~/.docker: `credHelpers`, then `credsStore`, then `auths`), then in the containers/Podman auth
 * files ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
 * ~/.config/containers/auth.json, which may also key entries by `registry/namespace`; the most
 * specific one wins). Returns undefined when nothing is stored: the caller then goes anonymous.
 * Throws when a file is malformed or a helper named for this registry fails.
 */
export async function findCredentials(
  registry: string,
  repository: string | undefined,
  options: CredentialLookupOptions = {},
): Promise<Credentials | undefined> {
  const env = options.env ?? process.env;
  const home = options.homeDir ?? homedir();
  const dockerDir = options.dockerConfig ?? env.DOCKER_CONFIG ?? join(home, ".docker");
  const files: { path: string; namespaced: boolean }[] = [
    { path: join(dockerDir, "config.json"), namespaced: false },
  ];
  if (env.REGISTRY_AUTH_FILE) files.push({ path: env.REGISTRY_AUTH_FILE, namespaced: true });
  if (env.XDG_RUNTIME_DIR)
    files.push({ path: join(env.XDG_RUNTIME_DIR, "containers", "auth.json"), namespaced: true });
  files.push({ path: join(home, ".config", "containers", "auth.json"), namespaced: true });

  const host = normalizeRegistryHost(registry);
  for (const file of files) {
    const config = await readAuthFile(file.path);
    if (!config) continue;
    const found = await lookupInFile(config, file.path, host, repository, file.namespaced, env);
    if (found) return found;
  }
  return undefined;
}

/** `https://index.docker.io/v1/` → `docker.io`; `http://127.0.0.1:5000` → `127.0.0.1:5000`. */
export function normalizeRegistryHost(key: string): string {
  let host = key.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  host = host.replace(/\/.*$/, "").toLowerCase();
  if (host === "index.docker.io" || host === "registry-1.docker.io") return DOCKER_HUB;
  return host;
}

/** The server string Docker passes to credential helpers for a registry. */
export function helperServerUrl(registry: string): string {
  return normalizeRegistryHost(registry) === DOCKER_HUB ? DOCKER_HUB_AUTH_KEY : registry;
}

async function readAuthFile(path: string): Promise<AuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new SutureError("IO", `cannot read ${path}: ${describeCause(e)}: check its permissions`, {
      cause: e,
    });
  }
  if (!text.trim()) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    // The message must not quote the file: it holds secrets. V8 quotes the text after a `"`, and
    // that text may span lines, so cut from the first quote to the very end ([\s\S], not `.`).
    throw new SutureError(
      "IO",
      `${path} is not valid JSON (${(e as Error).message.replace(/"[\s\S]*$/, "").trim()}): fix or remove it, or run docker login again`,
      { cause: e },
    );
  }
  const checked = AuthFileSchema.safeParse(parsed);
  if (!checked.success) {
    throw new SutureError(
      "IO",
      `${path} is malformed at ${describeFirstIssue(checked.error)}: fix or remove it, or run docker login again`,
      { cause: checked.error },
    );
  }
  return checked.data;
}

/**
 * Keys to try for a registry, most specific first. Namespaced keys (`quay.io/org/repo`) exist only
 * in containers auth files; Docker's config keys are hosts, possibly written as URLs.
 */
function candidateKeys(host: string, repository: string | undefined, namespaced: boolean): string[] {
  const keys: string[] = [];
  if (namespaced && repository) {
    const parts = repository.split("/");
    for (let i = parts.length; i > 0; i--) keys.push(`${host}/${parts.slice(0, i).join("/")}`);
  }
  keys.push(host);
  return keys;
}

/** Normalise a config key: URL-form keys are hosts; bare keys keep their namespace path. */
function normalizeKey(key: string, namespaced: boolean): string {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(key);
  if (!namespaced || hasScheme) return normalizeRegistryHost(key);
  const slash = key.indexOf("/");
  const host = normalizeRegistryHost(slash < 0 ? key : key.slice(0, slash));
  const path = slash < 0 ? "" : key.slice(slash).replace(/\/+$/, "");
  return host + path;
}

function findEntry<T>(
  map: Record<string, T> | null | undefined,
  keys: string[],
  namespaced: boolean,
): T | undefined {
  if (!map) return undefined;
  const normalized = new Map<string, T>();
  for (const [k, v] of Object.entries(map)) {
    const nk = normalizeKey(k, namespaced);
    // An exact (already normal) key beats a URL-form duplicate of it.
    if (!normalized.has(nk) || k === nk) normalized.set(nk, v);
  }
  for (const k of keys) {
    const v = normalized.get(k);
    if (v !== undefined) return v;
  }
  return undefined;
}

async function lookupInFile(
  config: AuthFile,
  path: string,
  host: string,
  repository: string | undefined,
  namespaced: boolean,
  env: NodeJS.ProcessEnv,
): Promise<Credentials | undefined> {
  const keys = candidateKeys(host, repository, namespaced);
  const helper = findEntry(config.credHelpers, keys, namespaced);
  if (helper) {
    return runCredentialHelper(helper, host, env, { required: true, configPath: path });
  }
  if (config.credsStore) {
    // A store that is not installed here (a config copied from another machine) falls back to
    // the file's own entries rather than failing every registry.
    const stored = await runCredentialHelper(config.credsStore, host, env, {
      required: false,
      configPath: path,
    });
    if (stored) return stored;
  }
  const entry = findEntry(config.auths, keys, namespaced);
  if (!entry) return undefined;
  return decodeEntry(entry, host, path);
}

function decodeEntry(entry: AuthEntry, host: string, path: string): Credentials | undefined {
  let username = entry.username ?? undefined;
  let password = entry.password ?? undefined;
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) {
      throw new SutureError(
        "UNAUTHORIZED",
        `the "auth" entry for ${host} in ${path} is not base64 of user:password: run docker login ${host} again`,
      );
    }
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const identityToken = entry.identitytoken || undefined;
  if (!identityToken && !username && !password) return undefined;
  return { username, password: identityToken ? undefined : password, identityToken, source: path };
}

/**
 * Run `docker-credential-NAME get` with the server on stdin, as Docker does. "credentials not
 * found" answers undefined; a missing helper answers undefined unless `required` (named in
 * `credHelpers` for exactly this registry), in which case it, like any other failure, throws.
 */
export async function runCredentialHelper(
  name: string,
  registry: string,
  env: NodeJS.ProcessEnv,
  options: { required: boolean; configPath: string },
): Promise<Credentials | undefined> {
  const program = `docker-credential-${name}`;
  // The protocol fixes argv (`get`, the server on stdin), but the name comes from a config file:
  // it must name a program on PATH, never a path (`../../tmp/x`) or an option.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name))
    throw new SutureError(
      "UNAUTHORIZED",
      `credential helper name ${JSON.stringify(name)} in ${options.configPath} is not a plain program name: fix credsStore/credHelpers`,
    );
  const server = helperServerUrl(registry);
  let result: { code: number | null; stdout: string; stderr: string };
  try {
    result = await runWithInput(program, ["get"], server, env);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      if (!options.required) return undefined;
      throw new SutureError(
        "UNAUTHORIZED",
        `credential helper ${program} (named for ${registry} in ${options.configPath}) is not installed: install it or remove the credHelpers entry`,
        { cause: e },
      );
    }
    throw new SutureError(
      "UNAUTHORIZED",
      `credential helper ${program} failed for ${registry}: ${describeCause(e)}: check the helper works (${program} list)`,
      { cause: e },
    );
  }
  const output = `${result.stdout}\n${result.stderr}`;
  if (result.code !== 0) {
    if (/credentials not found/i.test(output)) return undefined;
    const detail = redact(output.trim().split("\n")[0] ?? "").slice(0, 200);
    throw new SutureError(
      "UNAUTHORIZED",
      `credential helper ${program} failed for ${registry} (exit ${result.code}${detail ? `: ${detail}` : ""}): log in again with docker login ${registry}`,
    );
  }
  let answer: z.infer<typeof HelperAnswerSchema>;
  try {
    answer = HelperAnswerSchema.parse(JSON.parse(result.stdout));
  } catch (e) {
    throw new SutureError(
      "UNAUTHORIZED",
      `credential helper ${program} answered something other than its JSON object of Username and Secret for ${registry}: check the helper`,
      { cause: e },
    );
  }
  const username = answer.Username ?? "";
  const secret = answer.Secret ?? "";
  if (!secret) return undefined;
  // Docker's convention: a helper returns an identity (refresh) token with Username "<token>".
  if (username === "<token>") return { identityToken: secret, source: program };
  return { username, password: secret, source: program };
}

function runWithInput(
  program: string,
  args: string[],
  input: string,
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // Our own timer: spawn's `timeout` option is never cleared when the program does not exist.
    const child = spawn(program, args, { env, stdio: ["pipe", "pipe", "pipe"] });
    const timer = setTimeout(() => child.kill("SIGKILL"), HELPER_TIMEOUT_MS);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      if (stdout.length < HELPER_OUTPUT_CAP) stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < HELPER_OUTPUT_CAP) stderr += d;
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (signal) reject(new Error(`killed by ${signal} (timed out after ${HELPER_TIMEOUT_MS / 1000} s?)`));
      else resolve({ code, stdout, stderr });
    });
    // A helper that exits without reading stdin must not crash us with EPIPE.
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}
