import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gunzipSync } from "node:zlib";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  mutatedBytes,
  mutatedText,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  parsesOrFailsCleanlyAsync,
  withinBudget,
} from "../../../test/fuzz/fuzz.ts";
import { requiring } from "../../../test/lab/requirements.ts";
import { buildRpm, createRepo, rpmScratch } from "../../../test/lab/rpm.ts";
import { openRpm, rpmPayloadEntries } from "./package.ts";
import { readPrimary } from "./primary.ts";
import { parseIni } from "./repo-config.ts";
import { parseRepomd, repomdEntry } from "./repomd.ts";

// Real packages and repositories come from the host's rpm tools (scripts/install-system-deps.sh).
const { after, before, test } = await requiring("tool:rpmbuild", "tool:createrepo_c");

// Property: repository metadata, repository configuration and .rpm files, all untrusted, either
// read or fail with one line of one of the expected codes, within a time budget. Seeds: a real
// package built by rpmbuild and the createrepo_c repository of it.

let scratch: Awaited<ReturnType<typeof rpmScratch>>;
let rpm: Buffer;
let repomd: string;
let primary: string;

before(async () => {
  scratch = await rpmScratch();
  const path = await buildRpm(scratch.dir, {
    name: "seed",
    version: "1.0",
    release: "1",
    payload: "w9.gzdio",
    files: [
      { path: "/etc/seed.conf", content: "a=1\n", config: true },
      { path: "/usr/bin/seed", content: "#!/bin/sh\n", mode: "0755" },
      { path: "/usr/bin/seed-link", symlinkTo: "seed" },
    ],
    requires: ["/bin/sh", "bash >= 5"],
  });
  rpm = await readFile(path);
  const repo = await createRepo(scratch.dir, [path]);
  repomd = repo.repomd.toString("utf8");
  const entry = repomdEntry(parseRepomd(repo.repomd, "repomd.xml"), "primary", "repomd.xml");
  primary = gunzipSync(await readFile(join(repo.dir, entry.location))).toString("utf8");
});
after(() => scratch?.remove());

test("mutated repomd.xml parses or fails with one line", () => {
  fc.assert(
    fc.property(mutatedText(repomd), (text) => {
      withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["UNTRUSTED", "TOO_LARGE"], () => parseRepomd(Buffer.from(text), "repomd.xml")),
      );
    }),
    fuzzParameters(300),
  );
});

test("mutated primary.xml (its checksum matching) reads or fails with one line", async () => {
  await fc.assert(
    fc.asyncProperty(mutatedText(primary), async (text) => {
      const bytes = Buffer.from(text);
      await parsesOrFailsCleanlyAsync(["UNTRUSTED", "TOO_LARGE", "INVALID_ARCHIVE"], () =>
        readPrimary(
          Readable.from([bytes]),
          {
            type: "primary",
            location: "repodata/primary.xml",
            checksum: { type: "sha256", value: createHash("sha256").update(bytes).digest("hex") },
          },
          { what: "primary.xml" },
        ),
      );
    }),
    fuzzParameters(200),
  );
});

test("hostile .repo files parse or fail with one line", () => {
  const seed =
    "[main]\ngpgcheck=1\n\n[baseos]\nname=BaseOS $releasever\nbaseurl=https://a/$basearch/\n  https://b/\ngpgkey=file:///etc/pki/rpm-gpg/KEY\n";
  fc.assert(
    fc.property(hostileText([seed]), (text) => {
      withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_MANIFEST"], () => parseIni(text, "x.repo")),
      );
    }),
    fuzzParameters(300),
  );
});

test("mutated .rpm files open and stream, or fail with one line", async () => {
  const path = join(scratch.dir, "fuzzed.rpm");
  await fc.assert(
    fc.asyncProperty(mutatedBytes(rpm), async (bytes) => {
      await writeFile(path, bytes);
      await parsesOrFailsCleanlyAsync(
        ["INVALID_ARCHIVE", "UNTRUSTED", "UNSAFE_LAYER", "TOO_LARGE", "UNSUPPORTED_OS"],
        async () => {
          const pkg = await openRpm(path);
          for await (const entry of rpmPayloadEntries(pkg)) for await (const _ of entry.body);
        },
      );
    }),
    fuzzParameters(150),
  );
});
