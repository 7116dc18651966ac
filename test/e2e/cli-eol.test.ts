/**
 * EOL, offline (issue 18 part 5): `--exit-on-eol` stops a bullseye image before any work with one
 * line naming the archive mirror, a bookworm image proceeds (with the LTS warning); `suture eol` and
 * `suture inspect` say the state; `suture eol --update` reads endoflife.date's v1 API (here a
 * loopback server answering in its shape) and writes the table atomically, or nothing.
 *
 * The CLI judges by today's date: the states asserted hold until bookworm's LTS ends (2028-06-30);
 * src/eol/table.test.ts pins the day for the library.
 *
 * The images are tiny OCI layouts of what detection reads (os-release and a dpkg status), not
 * whole releases: the EOL decision needs nothing else.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { needs } from "../lab/requirements.ts";
import { tarOf } from "../lab/tar.ts";

const run = promisify(execFile);
let work: string;
let cache: string;

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return run(SUTURE, args, { maxBuffer: 16 * 1024 * 1024, env: { ...process.env, CI: "true", ...env } });
}

/** An OCI layout holding one image whose only layer has os-release and a one-package dpkg status. */
async function tinyDebian(name: string, versionId: string, codename: string): Promise<string> {
  const dir = join(work, name);
  const layer = await tarOf([
    { name: "etc", type: "directory" },
    {
      name: "etc/os-release",
      content: `PRETTY_NAME="Debian GNU/Linux ${versionId} (${codename})"\nNAME="Debian GNU/Linux"\nVERSION_ID="${versionId}"\nVERSION_CODENAME=${codename}\nID=debian\n`,
    },
    { name: "var", type: "directory" },
    { name: "var/lib", type: "directory" },
    { name: "var/lib/dpkg", type: "directory" },
    {
      name: "var/lib/dpkg/status",
      content:
        "Package: base-files\nStatus: install ok installed\nPriority: required\nVersion: 1\nArchitecture: amd64\nDescription: tiny\n\n",
    },
  ]);
  const layout = await layoutWriter(dir);
  const layerDesc = await layout.put(layer);
  const diffID = `sha256:${createHash("sha256").update(layer).digest("hex")}`;
  const config = await layout.put(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        created: "2024-01-01T00:00:00Z",
        rootfs: { type: "layers", diff_ids: [diffID] },
        history: [{ created: "2024-01-01T00:00:00Z", created_by: "test" }],
      }),
    ),
  );
  const manifestType = "application/vnd.oci.image.manifest.v1+json";
  const manifest = await layout.put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: manifestType,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", ...layerDesc }],
      }),
    ),
  );
  await layout.tag(manifestType, manifest);
  return `oci:${dir}:latest`;
}

/** A Trivy report of one libc6 fix, for an image of `versionId` (which the tiny image does not have installed). */
async function report(versionId: string): Promise<string> {
  const file = join(work, `trivy-${versionId}.json`);
  await writeFile(
    file,
    JSON.stringify({
      SchemaVersion: 2,
      ArtifactName: "tiny",
      ArtifactType: "container_image",
      Metadata: { OS: { Family: "debian", Name: versionId } },
      Results: [
        {
          Target: `tiny (debian ${versionId})`,
          Class: "os-pkgs",
          Type: "debian",
          Vulnerabilities: [
            {
              VulnerabilityID: "CVE-2024-2961",
              PkgName: "libc6",
              InstalledVersion: "2.31-13",
              FixedVersion: "2.31-13+deb11u9",
              Status: "fixed",
            },
          ],
        },
      ],
    }),
  );
  return file;
}

let bullseye: string;
let bookworm: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-eol-"));
  cache = join(work, "cache");
  bullseye = await tinyDebian("bullseye", "11", "bullseye");
  bookworm = await tinyDebian("bookworm", "12", "bookworm");
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

test(
  "--exit-on-eol stops a bullseye image before any work, with one line naming the archive mirror",
  await needs("root"),
  async () => {
    const out = join(work, "out-bullseye");
    await assert.rejects(
      cli([
        "patch",
        "-i",
        bullseye,
        "-r",
        await report("11.11"),
        "-t",
        "patched",
        "--oci-dir",
        out,
        "--exit-on-eol",
        "--progress",
        "plain",
        "--cache-dir",
        cache,
      ]),
      (e: { code: number; stderr: string }) => {
        oneLineError(
          /Debian 11 \(bullseye\) is end of life since 2026-08-31.*--mirror http:\/\/deb\.debian\.org\/debian=http:\/\/archive\.debian\.org\/debian.*--exit-on-eol.*\[END_OF_LIFE\]$/,
          1,
        )(e);
        // Nothing was unpacked: the layers were only read for os-release.
        assert.doesNotMatch(e.stderr, /materialis|extract|apply/i, e.stderr);
        return true;
      },
    );
    assert.equal(existsSync(out), false);
    // No layer reached the layer cache (the sandbox's first step).
    const cached = existsSync(cache) ? await readdir(cache) : [];
    assert.deepEqual(
      cached.filter((n) => !n.startsWith("patch-")),
      [],
    );
  },
);

test(
  "a bookworm image (in Debian LTS) proceeds under --exit-on-eol, warning that fixes come only from LTS",
  await needs("root"),
  async () => {
    const out = join(work, "out-bookworm");
    const { stdout, stderr } = await cli([
      "patch",
      "-i",
      bookworm,
      "-r",
      await report("12.5"),
      "-t",
      "patched",
      "--oci-dir",
      out,
      "--exit-on-eol",
      "--progress",
      "plain",
      "--cache-dir",
      cache,
    ]);
    assert.match(
      stderr,
      /Debian 12 \(bookworm\) is past its security support \(ended 2026-06-10\), in LTS until 2028-06-30/,
    );
    assert.match(stdout, /is up to date: nothing to patch/);
  },
);

test("without --exit-on-eol a bullseye image is patched with a warning", await needs("root"), async () => {
  const { stdout, stderr } = await cli([
    "patch",
    "-i",
    bullseye,
    "-r",
    await report("11.11"),
    "-t",
    "patched",
    "--oci-dir",
    join(work, "out-bullseye-warned"),
    "--progress",
    "plain",
    "--cache-dir",
    cache,
  ]);
  assert.match(
    stderr,
    /warning.*Debian 11 \(bullseye\) is end of life since 2026-08-31.*archive\.debian\.org/i,
  );
  assert.match(stdout, /is up to date/);
});

test("suture inspect and suture eol IMAGE say the image's EOL state; suture eol lists the table with its source", async () => {
  // Its own XDG cache: a table the user updated must not decide this test.
  const inspect = await cli(["inspect", bullseye], { XDG_CACHE_HOME: join(work, "xdg") });
  assert.match(inspect.stdout, /EOL: +eol: Debian 11 \(bullseye\) is end of life since 2026-08-31/);
  const one = await cli(["eol", bookworm, "--cache-dir", cache]);
  assert.match(one.stdout, /^extended: Debian 12 \(bookworm\) is past its security support/);
  const json = JSON.parse((await cli(["eol", bullseye, "--format", "json", "--cache-dir", cache])).stdout);
  assert.equal(json.platforms[0].status, "eol");
  assert.equal(
    json.platforms[0].archiveMirror,
    "http://deb.debian.org/debian=http://archive.debian.org/debian",
  );
  const listed = await cli(["eol", "--cache-dir", cache]);
  assert.match(listed.stdout, /^debian +11 +bullseye +2024-08-14 +2026-08-31 +eol$/m);
  assert.match(listed.stdout, /^Source: suture's bundled table, written by hand on 2026-12-01/m);
});

/** endoflife.date's v1 answer for `product`, in its shape (schema 1.2.0), from the releases given. */
function apiAnswer(product: string, releases: object[]): string {
  return JSON.stringify({
    schema_version: "1.2.0",
    generated_at: "2026-12-01T00:00:00+00:00",
    result: { name: product, label: product, category: "os", releases },
  });
}

function serve(answer: (product: string) => { status: number; body: string }): Promise<Server> {
  const server = createServer((req, res) => {
    const m = /^\/api\/v1\/products\/([a-z0-9-]+)\/$/.exec(req.url ?? "");
    const { status, body } = m ? answer(m[1]!) : { status: 404, body: "{}" };
    res.writeHead(status, { "content-type": "application/json" }).end(body);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

test(
  "suture eol --update reads endoflife.date's v1 API and writes the table; a bad answer writes nothing",
  await needs("loopback"),
  async () => {
    const updateCache = join(work, "update-cache");
    const release = (name: string, codename: string | null, eolFrom: string, eoesFrom: string | null) => ({
      name,
      codename,
      label: name,
      releaseDate: "2021-08-14",
      isLts: false,
      ltsFrom: null,
      isEol: eolFrom < "2026-12-01",
      eolFrom,
      isEoes: eoesFrom !== null && eoesFrom < "2026-12-01",
      eoesFrom,
      isMaintained: true,
      latest: { name: "11.11", date: "2024-08-31", link: null },
      custom: null,
    });
    let broken = false;
    const server = await serve((product) => {
      if (broken && product === "ubuntu")
        return { status: 200, body: '{"schema_version":"1.2.0","result":{}}' };
      // Debian extends bullseye's LTS here, so the state read after the update must change.
      const releases = product === "debian" ? [release("11", "Bullseye", "2024-08-14", "2027-08-31")] : [];
      return { status: 200, body: apiAnswer(product, releases) };
    });
    try {
      const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/products`;
      const { stdout } = await cli(["eol", "--update", "--eol-api-url", api, "--cache-dir", updateCache]);
      assert.match(stdout, /updated the EOL table: 15 products, 1 releases/);
      const one = await cli(["eol", bullseye, "--cache-dir", updateCache]);
      assert.match(
        one.stdout,
        /^extended: Debian 11 \(bullseye\) is past its security support \(ended 2024-08-14\), in LTS until 2027-08-31/,
      );
      const file = join(updateCache, "eol", "endoflife-date.json");
      const before = await readFile(file, "utf8");

      broken = true;
      await assert.rejects(
        cli(["eol", "--update", "--eol-api-url", api, "--cache-dir", updateCache]),
        oneLineError(
          /\/ubuntu\/ is not an endoflife\.date v1 product answer .*check --eol-api-url \[INVALID_MANIFEST\]$/,
        ),
      );
      assert.equal(await readFile(file, "utf8"), before);
      assert.deepEqual(
        (await readdir(join(updateCache, "eol"))).filter((n) => n.endsWith(".tmp")),
        [],
      );
    } finally {
      server.close();
    }
  },
);
