import { createPrivateKey, type KeyObject, randomBytes, sign, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A small Docker token server (the "token authentication" of the distribution spec) for the lab
 * registry: it checks Basic credentials or an OAuth2 refresh token and issues real ES256-signed
 * JWTs carrying the requested repository scopes, with the signing certificate in the `x5c` header
 * so distribution verifies them against its `rootcertbundle`.
 */
export interface TokenServerOptions {
  username: string;
  password: string;
  /** The refresh token (Docker's `identitytoken`) the OAuth2 POST flow accepts. */
  refreshToken: string;
  service: string;
  issuer: string;
  /** PEM private key (P-256) matching `certPem`. */
  keyPem: string;
  /** PEM certificate of the signing key, also given to the registry as its root bundle. */
  certPem: string;
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
}

/** One token request, as seen by the server: what tests assert on (scopes asked, flow used). */
export interface TokenRequestRecord {
  method: string;
  /** `basic`, `refresh_token`, `password` or `anonymous`. */
  flow: string;
  scopes: string[];
  service?: string;
  /** Whether the caller proved who it is; anonymous callers get tokens with no access. */
  authenticated: boolean;
  /** The HTTP status answered. */
  status: number;
}

export interface TokenServer {
  /** The realm URL to put in the registry's auth.token config. */
  readonly realm: string;
  readonly requests: TokenRequestRecord[];
  stop(): Promise<void>;
}

interface Access {
  type: string;
  name: string;
  actions: string[];
}

const grantable = new Set(["pull", "push", "delete", "*"]);

/** `repository:library/x:pull,push` → access entry; undefined for malformed scopes. */
function parseScope(scope: string): Access | undefined {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first < 0 || last <= first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(",")
      .filter(Boolean),
  };
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

function certDerBase64(certPem: string): string {
  const body = certPem
    .replace(/-----BEGIN CERTIFICATE-----/, "")
    .replace(/-----END CERTIFICATE-----[\s\S]*$/, "")
    .replace(/\s+/g, "");
  return body;
}

/** A signed JWT in the claim set distribution 2.8 expects (single-string `aud`, `access` list). */
export function signRegistryToken(
  key: KeyObject,
  certPem: string,
  claims: { issuer: string; service: string; subject: string; access: Access[]; expiresIn: number },
): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { typ: "JWT", alg: "ES256", x5c: [certDerBase64(certPem)] };
  const payload = {
    iss: claims.issuer,
    sub: claims.subject,
    aud: claims.service,
    exp: now + claims.expiresIn,
    nbf: now - 10,
    iat: now,
    jti: randomBytes(12).toString("hex"),
    access: claims.access,
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  // JWS ES256 wants the raw r||s signature, not DER.
  const signature = sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  return `${input}.${b64url(signature)}`;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

async function readBody(req: http.IncomingMessage, cap = 64 * 1024): Promise<string> {
  let text = "";
  for await (const chunk of req) {
    text += chunk;
    if (text.length > cap) throw new Error("body too large");
  }
  return text;
}

/** Start the token server on 127.0.0.1 (random port). */
export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const key = createPrivateKey(options.keyPem);
  const requests: TokenRequestRecord[] = [];
  const expiresIn = options.expiresIn ?? 300;

  const answer = (
    res: http.ServerResponse,
    record: Omit<TokenRequestRecord, "status">,
    scopes: string[],
    subject: string,
  ) => {
    if (!record.authenticated && record.flow !== "anonymous") {
      requests.push({ ...record, status: 401 });
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "invalid credentials" }] }));
      return;
    }
    const access: Access[] = [];
    if (record.authenticated) {
      for (const s of scopes) {
        const a = parseScope(s);
        if (a && a.type === "repository")
          access.push({ ...a, actions: a.actions.filter((x) => grantable.has(x)) });
      }
    }
    const token = signRegistryToken(key, options.certPem, {
      issuer: options.issuer,
      service: options.service,
      subject,
      access,
      expiresIn,
    });
    requests.push({ ...record, status: 200 });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: expiresIn,
        issued_at: new Date().toISOString(),
        ...(record.flow === "refresh_token" || record.flow === "password"
          ? { refresh_token: options.refreshToken }
          : {}),
      }),
    );
  };

  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", "http://token.invalid");
      if (url.pathname !== "/token") {
        res.writeHead(404).end();
        return;
      }
      if (req.method === "GET") {
        const scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" ").filter(Boolean));
        const service = url.searchParams.get("service") ?? undefined;
        const auth = req.headers.authorization;
        if (!auth) {
          answer(
            res,
            { method: "GET", flow: "anonymous", scopes, service, authenticated: false },
            scopes,
            "",
          );
          return;
        }
        const m = /^Basic\s+(.+)$/i.exec(auth);
        const decoded = m ? Buffer.from(m[1]!, "base64").toString("utf8") : "";
        const colon = decoded.indexOf(":");
        const user = decoded.slice(0, Math.max(0, colon));
        const pass = decoded.slice(colon + 1);
        const ok = colon > 0 && safeEqual(user, options.username) && safeEqual(pass, options.password);
        answer(res, { method: "GET", flow: "basic", scopes, service, authenticated: ok }, scopes, user);
        return;
      }
      if (req.method === "POST") {
        const form = new URLSearchParams(await readBody(req));
        const scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
        const service = form.get("service") ?? undefined;
        const grant = form.get("grant_type") ?? "";
        let ok = false;
        let subject = "";
        if (grant === "refresh_token") {
          ok = safeEqual(form.get("refresh_token") ?? "", options.refreshToken);
          subject = options.username;
        } else if (grant === "password") {
          ok =
            safeEqual(form.get("username") ?? "", options.username) &&
            safeEqual(form.get("password") ?? "", options.password);
          subject = form.get("username") ?? "";
        }
        answer(
          res,
          { method: "POST", flow: grant || "unknown", scopes, service, authenticated: ok },
          scopes,
          subject,
        );
        return;
      }
      res.writeHead(405).end();
    })().catch(() => {
      if (!res.headersSent) res.writeHead(400);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
