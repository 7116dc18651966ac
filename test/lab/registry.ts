import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { openSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startTokenServer, type TokenServer } from "./token-server.ts";

const run = promisify(execFile);

/** A real CNCF distribution registry (Debian's docker-registry) on 127.0.0.1, for one test file. */
export interface LabRegistry {
  /** `127.0.0.1:PORT`: the registry part of references. */
  readonly host: string;
  readonly auth: RegistryAuthMode;
  /** Credentials accepted (htpasswd and token modes). */
  readonly username?: string;
  readonly password?: string;
  /** A Docker config directory whose config.json holds this registry's credentials. */
  readonly dockerConfigDir: string;
  /** Token mode: the token server (with its request log). */
  readonly tokenServer?: TokenServer;
  /** Token mode: a refresh token (Docker's `identitytoken`) the token server accepts. */
  readonly identityToken?: string;
  /** Where the registry stores its data (filesystem driver). */
  readonly storageDir: string;
  /** Stop the registry (and token server) and delete every temporary file. */
  stop(): Promise<void>;
}

export type RegistryAuthMode = "none" | "htpasswd" | "token";

const REGISTRY_BIN = "/usr/bin/docker-registry";
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

/** A port the OS just handed out and released; the registry binds it right after. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitReady(
  url: string,
  child: ChildProcess,
  logPath: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `docker-registry exited early (${child.exitCode ?? child.signalCode}): ${tail(logPath)}`,
      );
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`docker-registry did not answer ${url} within ${timeoutMs} ms: ${tail(logPath)}`);
}

function tail(path: string): string {
  try {
    return readFileSync(path, "utf8").trim().split("\n").slice(-5).join(" | ");
  } catch {
    return "(no log)";
  }
}

function yamlString(s: string): string {
  return JSON.stringify(s);
}

/** One notification endpoint; a short backoff so a test sees a retried delivery within seconds. */
function notificationsYaml(n: { url: string; headers?: Record<string, string> } | undefined): string {
  if (!n) return "";
  const headers = Object.entries(n.headers ?? {}).map(
    ([k, v]) => `        ${yamlString(k)}: [${yamlString(v)}]`,
  );
  return [
    "notifications:",
    "  endpoints:",
    "    - name: lab",
    `      url: ${yamlString(n.url)}`,
    "      timeout: 5s",
    "      threshold: 3",
    "      backoff: 1s",
    ...(headers.length ? ["      headers:", ...headers] : []),
    "",
  ].join("\n");
}

/**
 * Start Debian's real `/usr/bin/docker-registry` (distribution 2.8) with a generated config:
 * filesystem storage in a temp dir, deletes enabled, listening on 127.0.0.1:<free port>, and
 * - `none`: open access;
 * - `htpasswd`: Basic auth with a bcrypt htpasswd file made by `htpasswd -Bbn`;
 * - `token`: bearer tokens from test/lab/token-server.ts, signed with a P-256 key whose
 *   self-signed certificate (made by `openssl req -x509`) is the registry's rootcertbundle.
 * Resolves once `/v2/` answers.
 */
export async function startRegistry(
  options: {
    auth?: RegistryAuthMode;
    /** Send the registry's push/pull notifications (distribution's `notifications.endpoints`) here. */
    notifications?: { url: string; headers?: Record<string, string> };
  } = {},
): Promise<LabRegistry> {
  const auth = options.auth ?? "none";
  const root = await mkdtemp(join(tmpdir(), "suture-registry-"));
  const storageDir = join(root, "storage");
  const dockerConfigDir = join(root, "docker-config");
  await mkdir(storageDir);
  await mkdir(dockerConfigDir);
  let tokenServer: TokenServer | undefined;
  let child: ChildProcess | undefined;
  const stop = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const c = child;
      const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
      c.kill("SIGTERM");
      const timer = setTimeout(() => c.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
      running.delete(c);
    }
    await tokenServer?.stop();
    await rm(root, { recursive: true, force: true });
  };

  try {
    const username = auth === "none" ? undefined : "suture";
    const password = auth === "none" ? undefined : randomBytes(12).toString("hex");
    const identityToken = auth === "token" ? randomBytes(24).toString("hex") : undefined;
    let authYaml = "";
    if (auth === "htpasswd") {
      const { stdout } = await run("htpasswd", ["-Bbn", username!, password!]);
      const htpasswdPath = join(root, "htpasswd");
      await writeFile(htpasswdPath, stdout);
      authYaml = `auth:\n  htpasswd:\n    realm: suture-lab\n    path: ${yamlString(htpasswdPath)}\n`;
    } else if (auth === "token") {
      const keyPath = join(root, "token-key.pem");
      const certPath = join(root, "token-cert.pem");
      await run("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        keyPath,
        "-out",
        certPath,
        "-days",
        "2",
        "-subj",
        "/CN=suture-lab-token-issuer",
      ]);
      const service = "suture-lab-registry";
      const issuer = "suture-lab-token-issuer";
      tokenServer = await startTokenServer({
        username: username!,
        password: password!,
        refreshToken: identityToken!,
        service,
        issuer,
        keyPem: await readFile(keyPath, "utf8"),
        certPem: await readFile(certPath, "utf8"),
      });
      authYaml =
        `auth:\n  token:\n    realm: ${yamlString(tokenServer.realm)}\n    service: ${service}\n` +
        `    issuer: ${issuer}\n    rootcertbundle: ${yamlString(certPath)}\n`;
    }

    const logPath = join(root, "registry.log");
    let host = "";
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      host = `127.0.0.1:${port}`;
      const configPath = join(root, "config.yml");
      await writeFile(
        configPath,
        [
          "version: 0.1",
          "log:",
          "  level: warn",
          "  accesslog:",
          "    disabled: true",
          "storage:",
          "  filesystem:",
          `    rootdirectory: ${yamlString(storageDir)}`,
          "  delete:",
          "    enabled: true",
          "  maintenance:",
          "    uploadpurging:",
          "      enabled: false",
          "http:",
          `  addr: ${host}`,
          `  secret: ${randomBytes(16).toString("hex")}`,
          authYaml,
          notificationsYaml(options.notifications),
        ].join("\n"),
      );
      const log = openSync(logPath, "a");
      child = spawn(REGISTRY_BIN, ["serve", configPath], { stdio: ["ignore", log, log] });
      running.add(child);
      try {
        await waitReady(`http://${host}/v2/`, child, logPath, 15_000);
        break;
      } catch (e) {
        // Lost the race for the port (another process took it): try another one.
        if (attempt < 2 && /address already in use/.test(tail(logPath))) continue;
        throw e;
      }
    }
    const config: { auths: Record<string, { auth: string }> } = { auths: {} };
    if (username && password) {
      config.auths[host] = { auth: Buffer.from(`${username}:${password}`).toString("base64") };
    }
    await writeFile(join(dockerConfigDir, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
    return {
      host,
      auth,
      username,
      password,
      dockerConfigDir,
      tokenServer,
      identityToken,
      storageDir,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
