import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { buildApi } from "../api.ts";
import { MemoryQueue } from "../memory-queue.ts";
import { openSqliteStore } from "../sqlite-store.ts";
import { Watcher } from "../watcher.ts";

const TOKEN = "0123456789abcdef0123456789abcdef";

function app() {
  const store = openSqliteStore(":memory:");
  const queue = new MemoryQueue();
  return buildApi({ store, queue, watcher: new Watcher({ store, queue }), token: TOKEN });
}

test("the dashboard's page is served without a token, with a CSP that allows only its own scripts and the import map's hash", async () => {
  const api = app();
  const root = await api.request("/");
  assert.equal(root.status, 302);
  assert.equal(root.headers.get("location"), "/dashboard/");
  const page = await api.request("/dashboard/");
  assert.equal(page.status, 200);
  const html = await page.text();
  const csp = page.headers.get("content-security-policy") ?? "";
  assert.match(csp, /default-src 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  // The one inline script is the import map, allowed by its hash and nothing else.
  const inline = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)].filter((m) => m[2]!.trim());
  assert.equal(inline.length, 1);
  assert.match(inline[0]![1]!, /type="importmap"/);
  const hash = createHash("sha256").update(inline[0]![2]!).digest("base64");
  assert.ok(csp.includes(`'sha256-${hash}'`), csp);
  assert.equal(page.headers.get("x-content-type-options"), "nosniff");
  // The API beside it still wants the token.
  assert.equal((await api.request("/api/v1/rules")).status, 401);
  assert.equal((await api.request("/dashboard/nope.js")).status, 404);
  assert.equal((await api.request("/dashboard/app/..%2Fserver.ts")).status, 404);
});

test("every module the page loads is JavaScript a browser parses, and every bare import is in the import map", async () => {
  const api = app();
  const html = await (await api.request("/dashboard/")).text();
  const map = JSON.parse(/<script type="importmap">([\s\S]*?)<\/script>/.exec(html)![1]!) as {
    imports: Record<string, string>;
  };
  const work = await mkdtemp(join(tmpdir(), "suture-dashboard-"));
  try {
    // Walk the module graph from the page's entry, as the browser does.
    const queue = [new URL("app/main.ts", "http://x/dashboard/").pathname];
    const seen = new Set<string>();
    while (queue.length) {
      const path = queue.shift()!;
      if (seen.has(path)) continue;
      seen.add(path);
      const res = await api.request(path);
      assert.equal(res.status, 200, path);
      assert.match(res.headers.get("content-type") ?? "", /^text\/javascript/);
      const code = await res.text();
      const file = join(work, `${seen.size}.mjs`);
      await writeFile(file, code);
      await promisify(execFile)(process.execPath, ["--check", file]).catch((e: Error) =>
        assert.fail(`${path} does not parse: ${e.message}`),
      );
      for (const m of code.matchAll(/(?:\bfrom|\bimport)\s*\(?\s*["']([^"']+)["']/g)) {
        const spec = m[1]!;
        if (spec.startsWith(".")) queue.push(new URL(spec, `http://x${path}`).pathname);
        else {
          assert.ok(map.imports[spec], `${path} imports ${spec}, which the import map lacks`);
          queue.push(new URL(map.imports[spec]!, "http://x/dashboard/").pathname);
        }
      }
    }
    assert.ok(seen.has("/dashboard/vendor/preact.mjs"));
    assert.ok(seen.has("/dashboard/app/rules.ts"));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});
