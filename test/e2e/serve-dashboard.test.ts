/**
 * The web dashboard of `suture serve` in a real browser: Debian's chromium driven by
 * playwright-core against a real `suture serve` watching a real loopback registry. It signs in
 * (and is refused with a wrong token), shows the fleet, edits rules, starts a real patch of the
 * distroless lab image with "Poll now", follows the running job's live log to its end, opens the
 * image's history and downloads its OpenVEX document. Screenshots go to test-results/dashboard/.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Browser, chromium, type Page } from "playwright-core";
import type { Rule } from "../../src/serve/store.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { SUTURE } from "../lab/cli.ts";
import {
  DISTROLESS_LIBSSL_CVE,
  type DistrolessLab,
  distrolessLabImage,
  distrolessLibsslReport,
} from "../lab/distroless.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import { manifestDigest, type ServeProcess, startServe, waitFor } from "../lab/serve.ts";

const CHROMIUM = "/usr/bin/chromium";
const { after, before, test } = await requiring("root", "loopback", "tool:docker-registry", "tool:chromium");

before(useArchiveMirror);

const run = promisify(execFile);
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
const shots = join(import.meta.dirname, "../../test-results/dashboard");
const CVE = DISTROLESS_LIBSSL_CVE;

let work: string;
let registry: LabRegistry;
let lab: DistrolessLab;
let service: ServeProcess;
let browser: Browser;
let page: Page;
/** What the page said went wrong: console errors (CSP violations land there) and uncaught errors. */
const pageErrors: string[] = [];

const shot = (name: string) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const api = async <T>(path: string): Promise<T> => {
  const res = await fetch(`${service.url}/api/v1/${path}`, {
    headers: { authorization: `Bearer ${service.token}` },
  });
  assert.equal(res.status, 200, path);
  return (await res.json()) as T;
};

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-dashboard-"));
  await mkdir(shots, { recursive: true });
  registry = await startRegistry();
  lab = await distrolessLabImage();
  // The rule's scanner stands in for Trivy: it takes a moment, as a scanner does, and prints a
  // report naming one fixed vulnerability of the lab image's libssl3.
  const report = join(work, "trivy.json");
  await distrolessLibsslReport(lab, report);
  service = await startServe({
    work,
    rules: `apiVersion: suture.dev/v1alpha1
kind: ServeRules
rules:
  - id: distroless
    image: ${registry.host}/lab/distroless
    tags: { strategy: list, list: ["1"] }
    interval: 1h
    scanner: { command: ["sh", "-c", "sleep 3; exec cat \\"$1\\"", "scanner", ${JSON.stringify(report)}], format: trivy }
`,
  });
  // The first poll (at start) finds no tag; only then is the image pushed, so the job starts when
  // the test clicks "Poll now" and the browser can follow it running.
  await waitFor(
    "the first poll",
    60_000,
    async () => (/rule distroless: /.test(service.log()) ? true : undefined),
    service.log,
  );
  await run(SUTURE, ["copy", lab.reference, `docker://${registry.host}/lab/distroless:1`]);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  page = await (await browser.newContext({ acceptDownloads: true })).newPage();
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("dialog", (d) => void d.accept());
});

after(async () => {
  await browser?.close();
  await service?.stop();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test("a wrong token is refused in the sign-in form, and nothing is kept", async () => {
  await page.goto(service.url);
  assert.equal(new URL(page.url()).pathname, "/dashboard/");
  await page.getByLabel("API token").fill("wrong-token-0123456789abcdef");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "refused this token" }).waitFor();
  await shot("01-wrong-token");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.equal(await page.getByRole("heading", { name: "Fleet" }).count(), 0);
});

test("signing in shows the fleet; the token is in no page or URL", async () => {
  await page.getByLabel("API token").fill(service.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
  await page.getByText("Watching 1 repository with 1 rule").waitFor();
  await page.getByText("Nothing is pending.").waitFor();
  await shot("02-fleet-empty");
  assert.ok(!(await page.content()).includes(service.token));
  assert.ok(!page.url().includes(service.token));
});

test("the rule editor creates, edits and deletes a rule through the API; a bad one is refused with the API's reason", async () => {
  await page.getByRole("link", { name: "Rules", exact: true }).click();
  await page.getByRole("heading", { name: "Rules" }).waitFor();
  await page.getByRole("button", { name: "New rule" }).click();
  await page.getByLabel("Rule id").fill("other");
  await page.getByLabel("Repository").fill(`${registry.host}/lab/other`);
  await page.getByLabel("Tags to watch").selectOption("pattern");
  await page.getByLabel("Tag pattern").fill("(");
  await page.getByLabel("Poll interval (seconds)").fill("3600");
  await page.getByRole("button", { name: "Create rule" }).click();
  await page.getByRole("alert").filter({ hasText: "not a valid regular expression" }).waitFor();
  await shot("03-rule-refused");
  await page.getByLabel("Tag pattern").fill("^v[0-9]+$");
  await page.getByRole("button", { name: "Create rule" }).click();
  await page.getByText("Rule other created.").waitFor();
  assert.deepEqual((await api<Rule>("rules/other")).tags, { strategy: "pattern", pattern: "^v[0-9]+$" });
  await page.getByRole("button", { name: "Edit other" }).click();
  await page.getByLabel("Poll interval (seconds)").fill("600");
  await page.getByRole("button", { name: "Save rule" }).click();
  await page.getByText("Rule other saved.").waitFor();
  assert.equal((await api<Rule>("rules/other")).intervalSeconds, 600);
  await shot("04-rules");
  await page.getByRole("button", { name: "Delete other" }).click();
  await page.getByText("Rule other deleted.").waitFor();
  assert.deepEqual(
    (await api<Rule[]>("rules")).map((r) => r.id),
    ["distroless"],
  );
  // The scanner of the rules file is shown, not offered for editing.
  await page.getByRole("button", { name: "Edit distroless" }).click();
  await page.getByText("set in the rules file; kept").waitFor();
  await page.getByRole("button", { name: "Cancel" }).click();
});

let jobId: string;

test("Poll now starts a real patch, and its page follows it running to its end with a live log", async () => {
  await page.getByRole("button", { name: "Poll distroless now" }).click();
  await page.getByText("Polling distroless.").waitFor();
  await page.getByRole("link", { name: "Fleet", exact: true }).click();
  const pending = page.locator("section[aria-labelledby=pending-h] a");
  await pending.first().waitFor({ timeout: 60_000 });
  await shot("05-fleet-pending");
  await pending.first().click();
  const state = page.getByTestId("job-state");
  await state.filter({ hasText: "running" }).waitFor({ timeout: 60_000 });
  jobId = decodeURIComponent(new URL(page.url()).hash.split("/").at(-1)!);
  // Lines arrive while it runs (the event stream, not a reload).
  await page.locator("ol.log li").nth(2).waitFor({ timeout: 120_000 });
  assert.equal((await api<{ state: string }>(`jobs/${jobId}`)).state, "running");
  await shot("06-job-running");
  await state.filter({ hasText: /succeeded|failed|cancelled/ }).waitFor({ timeout: 15 * 60_000 });
  await shot("07-job-ended");
  assert.equal(await state.textContent(), "succeeded", service.log());
  const log = (await page.locator("ol.log").textContent()) ?? "";
  assert.match(log, /updated libssl3 \S+ → 3\.0\./);
  assert.match(log, /job succeeded/);
  await page.getByText(`CVEs fixed: ${CVE}`).waitFor();
  assert.ok(await manifestDigest(registry.host, "lab/distroless", "1-patched"), "the patched tag was pushed");
});

test("the image's history shows the per-platform result and downloads its OpenVEX document", async () => {
  await page.getByRole("link", { name: `${registry.host}/lab/distroless` }).click();
  await page.getByRole("heading", { name: `Image ${registry.host}/lab/distroless` }).waitFor();
  const row = page.locator("tbody tr").first();
  await row.getByText("linux/amd64").waitFor();
  assert.match((await row.textContent()) ?? "", /linux\/amd64: patched\s*1 package updated/);
  assert.match((await row.textContent()) ?? "", new RegExp(CVE));
  await shot("08-image-history");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    row.getByRole("button", { name: /Download VEX/ }).click(),
  ]);
  assert.equal(download.suggestedFilename(), `${jobId}.openvex.json`);
  const file = join(work, "downloaded.openvex.json");
  await download.saveAs(file);
  const vex = JSON.parse(await readFile(file, "utf8")) as {
    "@context": string;
    statements: {
      status: string;
      vulnerability: { name: string };
      products: { subcomponents?: { "@id": string }[] }[];
    }[];
  };
  assert.match(vex["@context"], /^https:\/\/openvex\.dev\/ns/);
  if (existsSync(schema)) assert.deepEqual(validateOpenVex(vex, schema).errors, []);
  const fixed = vex.statements.find((s) => s.vulnerability.name === CVE);
  assert.equal(fixed?.status, "fixed");
  assert.ok(
    fixed!.products.some((p) => p.subcomponents?.some((c) => c["@id"].startsWith("pkg:deb/debian/libssl3@"))),
    JSON.stringify(fixed),
  );
});

test("the fleet shows the patched image and its CVEs", async () => {
  await page.getByRole("link", { name: "Fleet", exact: true }).click();
  const image = page.locator("section[aria-labelledby=images-h] tbody tr").first();
  await image.getByText(`${registry.host}/lab/distroless`).waitFor();
  // Image, last patch, result, patched, failed, CVEs fixed.
  const cells = await image.locator("td").allInnerTexts();
  assert.equal(cells[2], "patched");
  assert.deepEqual(cells.slice(3), ["1", "0", "1"]);
  await page.getByText("Nothing is pending.").waitFor();
  await shot("09-fleet-patched");
});

test("a running job is cancelled from its page, and retried as a new job", async () => {
  // A second rule on the same image (update-all, its own tag) starts a job as soon as it is saved.
  await page.getByRole("link", { name: "Rules", exact: true }).click();
  await page.getByRole("button", { name: "New rule" }).click();
  await page.getByLabel("Rule id").fill("again");
  await page.getByLabel("Repository").fill(`${registry.host}/lab/distroless`);
  await page.getByLabel("Tags", { exact: true }).fill("1");
  await page.getByLabel("Patched tag").fill("{{ .SourceTag }}-again");
  await page.getByRole("button", { name: "Create rule" }).click();
  await page.getByText("Rule again created.").waitFor();
  await page.getByRole("link", { name: "Fleet", exact: true }).click();
  const pending = page.locator("section[aria-labelledby=pending-h] a");
  await pending.first().waitFor({ timeout: 60_000 });
  await pending.first().click();
  const state = page.getByTestId("job-state");
  await state.filter({ hasText: /queued|running/ }).waitFor();
  const first = decodeURIComponent(new URL(page.url()).hash.split("/").at(-1)!);
  await page.getByRole("button", { name: "Cancel job" }).click();
  await state.filter({ hasText: "cancelled" }).waitFor({ timeout: 120_000 });
  await shot("10-job-cancelled");
  await page.getByRole("button", { name: "Retry job" }).click();
  await page.waitForURL((u) => !u.hash.endsWith(first));
  const second = decodeURIComponent(new URL(page.url()).hash.split("/").at(-1)!);
  const retried = await api<{ spec: { reason: string; ruleId: string } }>(`jobs/${second}`);
  assert.deepEqual([retried.spec.ruleId, retried.spec.reason], ["again", "manual"]);
  await state.filter({ hasText: /queued|running/ }).waitFor();
  await page.getByRole("button", { name: "Cancel job" }).click();
  await state.filter({ hasText: "cancelled" }).waitFor({ timeout: 120_000 });
  assert.equal(await manifestDigest(registry.host, "lab/distroless", "1-again"), undefined, "nothing pushed");
});

test("signing out forgets the token; the token is in no log; the page met no errors", async () => {
  // Keyboard: the sign-out button is reachable and works with Enter.
  await page.getByRole("button", { name: "Sign out" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Sign in to suture" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.ok(!service.log().includes(service.token), "the token is not in the service's log");
  // Refusals the test asked for (the wrong token's 401, the bad rule's 400) are logged by the
  // browser as failed resource loads; nothing else (no CSP violation, no script error) may be.
  assert.deepEqual(
    pageErrors.filter((e) => !/status of 40[01]/.test(e)),
    [],
  );
});
