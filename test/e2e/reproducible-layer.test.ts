/**
 * Reproducible patch layers (issue 18 part 6, "Done when"): the same image patched to the same
 * package versions twice, each time with an empty cache and at a later time, gives the same patch
 * layer digest — with the native engine running the maintainer scripts (the nginx lab image has a
 * shell) and with the sandbox engine (the image's own apt in runc). On a mismatch the test prints
 * which members differ and how, which is what to fix.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";
import { type ListedMember, listTar } from "../lab/tar.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-reproducible-"));
});
after(() => rm(work, { recursive: true, force: true }));

/** The patch layer of the image written to `out` (the top layer of its one manifest). */
async function patchLayer(out: string, tag: string): Promise<{ digest: string; bytes: Buffer }> {
  const blob = async (digest: string) => readFile(join(out, "blobs/sha256", digest.slice(7)));
  const index = JSON.parse(await readFile(join(out, "index.json"), "utf8"));
  const top = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.["org.opencontainers.image.ref.name"] === tag,
  );
  const manifest = JSON.parse((await blob(top.digest)).toString("utf8"));
  const digest: string = manifest.layers.at(-1).digest;
  return { digest, bytes: await blob(digest) };
}

/** Each member's header fields and content hash, by name: what a differing layer differs in. */
async function members(gz: Buffer): Promise<Map<string, string>> {
  const listed: ListedMember[] = await listTar(gunzipSync(gz), { bodies: true });
  return new Map(
    listed.map((m, i) => {
      const { body, pax, ...header } = m;
      const sha = createHash("sha256").update(body).digest("hex").slice(0, 16);
      return [m.name, JSON.stringify({ order: i, ...header, pax: [...pax.keys()], sha })];
    }),
  );
}

async function differences(a: Buffer, b: Buffer): Promise<string[]> {
  const [ma, mb] = [await members(a), await members(b)];
  const out: string[] = [];
  for (const name of new Set([...ma.keys(), ...mb.keys()]))
    if (ma.get(name) !== mb.get(name))
      out.push(`${name}: ${ma.get(name) ?? "absent"} / ${mb.get(name) ?? "absent"}`);
  return out;
}

for (const engine of ["native", "sandbox"] as const) {
  test(`the ${engine} engine: two patches with empty caches, at different times, give one layer digest`, async () => {
    const lab = await labImage("bookwormNginx");
    const { path: report, fixes } = await trivyReportFor("bookwormNginx", {
      outFile: join(work, `report-${engine}.json`),
    });
    assert.ok(fixes.length > 5, "a real multi-package report");
    const layers: { digest: string; bytes: Buffer }[] = [];
    for (const run of ["first", "second"]) {
      const out = join(work, `${engine}-${run}`);
      const { stderr } = await patchIntoOciDir({
        reference: lab.reference,
        engine,
        out,
        cacheDir: join(work, `cache-${engine}-${run}`),
        report,
        // Generous: this machine is shared, and two cold patches of a real image take minutes.
        extraArgs: ["--progress", "plain", "--timeout", "40m"],
      });
      if (engine === "native")
        assert.match(stderr, /maintainer scripts|dpkg --configure|configur/i, "scripts ran");
      layers.push(await patchLayer(out, engine));
    }
    const [first, second] = layers as [(typeof layers)[0], (typeof layers)[0]];
    if (first.digest !== second.digest) {
      const diff = await differences(first.bytes, second.bytes);
      assert.fail(
        `the two layers differ (${first.digest} / ${second.digest}) in ${diff.length} members:\n${diff.slice(0, 60).join("\n")}`,
      );
    }
  });
}
