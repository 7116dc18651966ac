/**
 * A mirror that serves altered repository files: each alteration is refused with its own one-line
 * UNTRUSTED error naming the file, exit non-zero, and nothing is written. The mirror proxies the
 * real Debian archive, so everything it does not alter is genuine and correctly signed.
 *
 * Expired metadata needs a signature the test controls: the distroless image (no apt sources of
 * its own) is patched with `--keyring` naming a key made here, and the mirror re-signs every
 * InRelease with it, moving one suite's Valid-Until into the past.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createCleartextMessage, generateKey, readCleartextMessage, readPrivateKey, sign } from "openpgp";
import {
  type ArchiveMirror,
  type ArchiveMirrorOptions,
  startArchiveMirror,
  useArchiveMirror,
} from "../lab/archive-mirror.ts";
import { oneLineError } from "../lab/cli.ts";
import { distrolessLabImage } from "../lab/distroless.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "loopback", "tool:mmdebstrap");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;
let report: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-untrusted-"));
  ({ path: report } = await trivyReportFor("bookwormNginx", {
    only: ["libexpat1"],
    outFile: join(work, "r.json"),
  }));
});
after(() => rm(work, { recursive: true, force: true }));

/** `suture patch` with Debian's archive behind `mirror` must fail with `error` and write nothing. */
async function refusedThroughMirror(mirror: ArchiveMirror, args: string[], name: string, error: RegExp) {
  const out = join(work, `out-${name}`);
  await assert.rejects(
    run(
      suture,
      [
        "patch",
        ...args,
        "-t",
        "x",
        "--oci-dir",
        out,
        "--mirror",
        `http://deb.debian.org/debian=${mirror.url}/debian`,
        "--mirror",
        `http://deb.debian.org/debian-security=${mirror.url}/debian-security`,
        "--cache-dir",
        join(work, `cache-${name}`),
      ],
      { env: { ...process.env, CI: "true" } },
    ),
    oneLineError(error),
  );
  assert.equal(existsSync(out), false, "nothing written");
}

const flip = (body: Buffer, at: number) => {
  const copy = Buffer.from(body);
  copy[at]! ^= 0x01;
  return copy;
};

const cases: { name: string; alter: ArchiveMirrorOptions["alter"]; error: RegExp }[] = [
  {
    name: "an InRelease whose signed text was changed",
    alter: (path, body) =>
      path.endsWith("/bookworm-security/InRelease")
        ? Buffer.from(
            body.toString("utf8").replace(/^Codename: bookworm-security$/m, "Codename: bookworm-securitz"),
          )
        : undefined,
    error: /bookworm-security.*(signature|signed)/i,
  },
  {
    name: "a Packages index that does not match the signed Release",
    alter: (path, body) =>
      /\/binary-amd64\/(by-hash\/SHA256\/[0-9a-f]+|Packages\.xz)$/.test(path) ? flip(body, 200) : undefined,
    error: /Packages.*(SHA256|size|does not match)/i,
  },
];

for (const c of cases) {
  test(`patch refuses ${c.name}; nothing is written`, async () => {
    const lab = await labImage("bookwormNginx");
    const altered = new Set<string>();
    const mirror = await startArchiveMirror({
      alter: async (path, body) => {
        const out = await c.alter?.(path, body);
        if (out && !out.equals(body)) altered.add(path);
        return out;
      },
    });
    try {
      await refusedThroughMirror(
        mirror,
        ["-i", lab.reference, "-r", report],
        `case-${cases.indexOf(c)}`,
        new RegExp(`${c.error.source}.*\\[UNTRUSTED\\]$`, "i"),
      );
      assert.ok(altered.size > 0, "the mirror altered a file");
    } finally {
      await mirror.stop();
    }
  });
}

test("patch refuses a suite whose signed Valid-Until has passed; nothing is written", async () => {
  const lab = await distrolessLabImage();
  const key = await generateKey({ userIDs: [{ name: "suture test archive" }], format: "armored" });
  const signingKey = await readPrivateKey({ armoredKey: key.privateKey });
  const keyring = join(work, "test-archive.asc");
  await writeFile(keyring, key.publicKey);
  const day = 24 * 60 * 60 * 1000;
  const rfc2822 = (t: number) => new Date(t).toUTCString().replace("GMT", "UTC");
  const resigned = new Set<string>();
  const mirror = await startArchiveMirror({
    alter: async (path, body) => {
      if (!path.endsWith("/InRelease")) return undefined;
      let text = (await readCleartextMessage({ cleartextMessage: body.toString("utf8") })).getText();
      if (path.endsWith("/bookworm-security/InRelease")) {
        text = text
          .replace(/^Date: .*$/m, `Date: ${rfc2822(Date.now() - 9 * day)}`)
          .replace(/^Valid-Until: .*$/m, `Valid-Until: ${rfc2822(Date.now() - 2 * day)}`);
        assert.match(text, /^Valid-Until: /m, "bookworm-security's InRelease has a Valid-Until to move");
      }
      resigned.add(path);
      const signed = await sign({
        message: await createCleartextMessage({ text }),
        signingKeys: signingKey,
      });
      return Buffer.from(signed);
    },
  });
  try {
    await refusedThroughMirror(
      mirror,
      ["-i", lab.reference, "--keyring", keyring],
      "expired",
      /bookworm-security.*expired on .*Valid-Until.*up-to-date mirror.*\[UNTRUSTED\]$/,
    );
    assert.ok(
      [...resigned].some((p) => p.endsWith("/bookworm-security/InRelease")),
      "the mirror re-signed the security suite's InRelease",
    );
  } finally {
    await mirror.stop();
  }
});
