/**
 * The web dashboard of `suture serve`: static files on the API's own listener, served without
 * auth (they hold no data; the browser sends the bearer token with every API call it makes).
 *
 * No build step, as for the rest of suture: the app's modules (`app/*.ts`, preact + htm) are
 * served with their types stripped (Node's own stripper, positions kept so browser stack traces
 * point at the source lines), and preact/htm are served from node_modules as the ESM files they
 * ship, resolved by the page's import map. esbuild is a dev dependency only, and the deployed
 * image installs production dependencies, so bundling at startup would need one more runtime
 * package for no gain at this size (a dozen requests on a page load, all from memory).
 *
 * Every response carries a Content-Security-Policy that allows scripts from this origin and the
 * one inline import map (by its hash) and nothing else: no inline script, no eval, no other
 * origin. The page renders untrusted text (image names, error text, log lines) as text only.
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { stripTypeScriptTypes } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Context, Hono } from "hono";
import { bundled } from "../../build/bundled.ts";

// In the CLI's bundle this module is dist/cli/suture.mjs; the app's files stay in the sources.
const HERE = bundled
  ? fileURLToPath(new URL("../../src/serve/dashboard/", import.meta.url))
  : import.meta.dirname;
const APP_DIR = join(HERE, "app");

/** Bare specifiers the app and the vendor modules import, and the file each is served as. */
const VENDOR: Record<string, { specifier: string; file: string }> = {
  "preact.mjs": { specifier: "preact", file: "preact" },
  "hooks.mjs": { specifier: "preact/hooks", file: "preact/hooks" },
  "htm.mjs": { specifier: "htm", file: "htm" },
  "htm-preact.mjs": { specifier: "htm/preact", file: "htm/preact" },
};

interface Asset {
  body: string;
  type: string;
}

interface Assets {
  index: string;
  csp: string;
  files: Map<string, Asset>;
  app: Map<string, Asset>;
  vendor: Map<string, Asset>;
}

const JS = "text/javascript; charset=utf-8";

/**
 * Node 24 marks `stripTypeScriptTypes` experimental and says so once per process on stderr; the
 * service's log is for operators, and the stripping is what Node does to suture's own sources.
 */
function stripTypes(source: string, file: string): string {
  const emit = process.emitWarning;
  process.emitWarning = () => {};
  try {
    return stripTypeScriptTypes(source, { mode: "strip", sourceUrl: file });
  } finally {
    process.emitWarning = emit;
  }
}

async function loadAssets(): Promise<Assets> {
  const app = new Map<string, Asset>();
  for (const name of await readdir(APP_DIR)) {
    if (!name.endsWith(".ts") || name.endsWith(".test.ts")) continue;
    app.set(name, { body: stripTypes(await readFile(join(APP_DIR, name), "utf8"), name), type: JS });
  }
  const vendor = new Map<string, Asset>();
  const imports: Record<string, string> = {};
  for (const [name, { specifier, file }] of Object.entries(VENDOR)) {
    const path = fileURLToPath(import.meta.resolve(file));
    // The shipped files end with a source map comment for a file we do not serve.
    const body = (await readFile(path, "utf8")).replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n");
    vendor.set(name, { body, type: JS });
    imports[specifier] = `./vendor/${name}`;
  }
  const importMap = JSON.stringify({ imports });
  const hash = createHash("sha256").update(importMap).digest("base64");
  const index = (await readFile(join(HERE, "index.html"), "utf8")).replace(
    "<!-- import map -->",
    `<script type="importmap">${importMap}</script>`,
  );
  const csp = [
    "default-src 'none'",
    `script-src 'self' 'sha256-${hash}'`,
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  const files = new Map<string, Asset>([
    ["style.css", { body: await readFile(join(HERE, "style.css"), "utf8"), type: "text/css; charset=utf-8" }],
  ]);
  return { index, csp, files, app, vendor };
}

/** The dashboard's routes: `/` (to the dashboard), `/dashboard/`, its files, app modules and vendor modules. */
export function dashboardRoutes(): Hono {
  // Read and strip once, at startup; a failure is kept and answers each request (500).
  const assets = loadAssets();
  assets.catch(() => {});
  const load = () => assets;
  const routes = new Hono();
  const send = async (c: Context, pick: (a: Assets) => Asset | undefined) => {
    const a = await load();
    const asset = pick(a);
    if (!asset)
      return c.json({ error: { code: "NOT_FOUND", message: `no dashboard file ${c.req.path}` } }, 404);
    return c.body(asset.body, 200, {
      "Content-Type": asset.type,
      "Content-Security-Policy": a.csp,
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      // A new suture version serves new files under the same names.
      "Cache-Control": "no-cache",
    });
  };
  routes.get("/", (c) => c.redirect("/dashboard/", 302));
  routes.get("/dashboard/", (c) => send(c, (a) => ({ body: a.index, type: "text/html; charset=utf-8" })));
  routes.get("/dashboard/:file", (c) => send(c, (a) => a.files.get(c.req.param("file"))));
  routes.get("/dashboard/app/:file", (c) => send(c, (a) => a.app.get(c.req.param("file"))));
  routes.get("/dashboard/vendor/:file", (c) => send(c, (a) => a.vendor.get(c.req.param("file"))));
  return routes;
}
