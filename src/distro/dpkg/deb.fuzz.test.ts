import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import {
  applyMutation,
  assertNoUnhandledRejections,
  fuzzParameters,
  HOSTILE_TOKENS,
  mutatedBytes,
  mutationArb,
  parsesOrFailsCleanlyAsync,
} from "../../../test/fuzz/fuzz.ts";
import { buildDeb } from "../../../test/lab/deb.ts";
import { listArMembers } from "../../archive/ar.ts";
import { isSutureError } from "../../errors/errors.ts";
import { openDeb } from "./deb.ts";

// Property: a .deb from a mirror (verified or not) either opens or fails with one line of
// INVALID_ARCHIVE; so does its ar container. The seed is a real package built by dpkg-deb with
// uncompressed members, so mutations reach the ar headers, both tar archives and the control
// text; members are re-wrapped in a valid ar container so each layer is probed on its own.

let work: string;
let seedMembers: { name: string; data: Buffer }[];
let seedDeb: Buffer;

function arHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(60, 0x20);
  h.write(name, 0, 16, "latin1");
  h.write("0", 16, "latin1");
  h.write("0", 28, "latin1");
  h.write("0", 34, "latin1");
  h.write("100644", 40, "latin1");
  h.write(String(size), 48, "latin1");
  h.write("`\n", 58, "latin1");
  return h;
}

function arOf(members: { name: string; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [Buffer.from("!<arch>\n")];
  for (const m of members) {
    parts.push(arHeader(m.name, m.data.length), m.data);
    if (m.data.length % 2) parts.push(Buffer.from("\n"));
  }
  return Buffer.concat(parts);
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), "suture-deb-fuzz-"));
  const out = await buildDeb(
    join(work, "seed.deb"),
    "Package: demo\nVersion: 1:1.0-1\nArchitecture: amd64\nMulti-Arch: same\nMaintainer: T <t@example.org>\nDescription: demo\n long text\n",
    [{ path: "etc/demo/demo.conf", content: "setting=1\n" }],
    [
      {
        path: "conffiles",
        content: "/etc/demo/demo.conf\nremove-on-upgrade /etc/demo/old.conf\n",
        mode: 0o644,
      },
      { path: "postinst", content: "#!/bin/sh\nexit 0\n" },
    ],
    "none",
  );
  seedDeb = readFileSync(out);
  const members = await listArMembers(out);
  seedMembers = members.map((m) => ({ name: m.name, data: seedDeb.subarray(m.offset, m.offset + m.size) }));
});
after(() => rmSync(work, { recursive: true, force: true }));

/** Open the package and read everything it offers, as the unpacker would. */
async function openEverything(path: string): Promise<void> {
  const deb = await openDeb(path);
  try {
    for await (const e of deb.dataEntries()) for await (const _ of e.body) void _;
  } finally {
    await deb.close();
  }
}

type DebMutation =
  | { kind: "container"; m: import("../../../test/fuzz/fuzz.ts").Mutation }
  | { kind: "member"; member: number; m: import("../../../test/fuzz/fuzz.ts").Mutation }
  | { kind: "control"; m: import("../../../test/fuzz/fuzz.ts").Mutation }
  | { kind: "rename"; member: number; name: string }
  | { kind: "drop"; member: number };

const debMutationArb: fc.Arbitrary<DebMutation> = fc.oneof(
  fc.record({ kind: fc.constant("container" as const), m: mutationArb }),
  fc.record({ kind: fc.constant("member" as const), member: fc.nat({ max: 2 }), m: mutationArb }),
  fc.record({ kind: fc.constant("control" as const), m: mutationArb }),
  fc.record({
    kind: fc.constant("rename" as const),
    member: fc.nat({ max: 2 }),
    name: fc.constantFrom(
      "control.tar.xz",
      "data.tar.bz2",
      "data.tar.lzma",
      "control.tar.gz",
      "data.tar.zst",
      "_extra",
      "#1/20",
      "a\nb",
      ...HOSTILE_TOKENS.slice(0, 8),
    ),
  }),
  fc.record({ kind: fc.constant("drop" as const), member: fc.nat({ max: 2 }) }),
);

/** Rewrite the control file inside control.tar in place (same length, so the tar stays intact). */
function mutateControlText(controlTar: Buffer, m: import("../../../test/fuzz/fuzz.ts").Mutation): Buffer {
  const out = Buffer.from(controlTar);
  const at = out.indexOf("Package: demo");
  if (at < 0) return out;
  const tail = out.indexOf("long text\n", at);
  if (tail < 0) return out; // an earlier edit already reshaped it
  const end = tail + "long text\n".length;
  const mutated = applyMutation(out.subarray(at, end), m);
  const fitted = Buffer.alloc(end - at, 0x20);
  mutated.copy(fitted, 0, 0, Math.min(mutated.length, fitted.length));
  fitted.copy(out, at);
  return out;
}

function buildMutatedDeb(ms: DebMutation[]): Buffer {
  let members = seedMembers.map((m) => ({ ...m }));
  let container: Buffer | undefined;
  for (const d of ms) {
    if (d.kind === "member" && members[d.member])
      members[d.member] = { ...members[d.member]!, data: applyMutation(members[d.member]!.data, d.m) };
    else if (d.kind === "control" && members[1])
      members[1] = { ...members[1], data: mutateControlText(members[1].data, d.m) };
    else if (d.kind === "rename" && members[d.member])
      members[d.member] = { ...members[d.member]!, name: d.name };
    else if (d.kind === "drop") members = members.filter((_, i) => i !== d.member);
  }
  container = arOf(members);
  for (const d of ms) if (d.kind === "container") container = applyMutation(container, d.m);
  return container;
}

test("the seed .deb opens (so mutations start from a real package)", async () => {
  const path = join(work, "rebuilt.deb");
  writeFileSync(path, arOf(seedMembers));
  const deb = await openDeb(path);
  assert.equal(deb.name, "demo");
  assert.deepEqual(deb.conffiles, ["/etc/demo/demo.conf"]);
});

test("openDeb: mutated packages open or fail with one-line INVALID_ARCHIVE", async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(debMutationArb, { minLength: 1, maxLength: 3 }), async (ms) => {
      const path = join(work, `m-${n++}.deb`);
      writeFileSync(path, buildMutatedDeb(ms));
      await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE"], () => openEverything(path));
      rmSync(path);
      await assertNoUnhandledRejections();
    }),
    fuzzParameters(120),
  );
});

test("listArMembers: mutated and random files list members inside the file or fail cleanly", async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        { weight: 4, arbitrary: fc.constant(0).chain(() => mutatedBytes(seedDeb, 4)) },
        {
          weight: 1,
          arbitrary: fc
            .uint8Array({ maxLength: 300 })
            .map((b) => Buffer.concat([Buffer.from("!<arch>\n"), b])),
        },
      ),
      async (bytes) => {
        const path = join(work, `a-${n++}.ar`);
        writeFileSync(path, bytes);
        const members = await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE"], () => listArMembers(path));
        for (const m of members ?? []) {
          assert.ok(Number.isSafeInteger(m.offset) && Number.isSafeInteger(m.size) && m.size >= 0);
          assert.ok(m.offset + m.size <= bytes.length, "a member runs past the end of the file");
        }
        rmSync(path);
      },
    ),
    fuzzParameters(100),
  );
});

// Regression: a case the properties above found, kept as a plain test.
test("regression: a member name with a newline gives a one-line error", async () => {
  const path = join(work, "newline.deb");
  writeFileSync(path, arOf([seedMembers[0]!, { name: "a\nb", data: seedMembers[1]!.data }, seedMembers[2]!]));
  await assert.rejects(openDeb(path), (e: Error) => {
    assert.match(e.message, /found "a\\nb"; download it again/);
    return true;
  });
});

test("regression: an oversized debian-binary is INVALID_ARCHIVE naming the package", async () => {
  const path = join(work, "big-format.deb");
  writeFileSync(
    path,
    arOf([
      { name: "debian-binary", data: Buffer.from(`2.0\n${"0".repeat(100)}\n`) },
      ...seedMembers.slice(1),
    ]),
  );
  await assert.rejects(openDeb(path), (e: Error) => {
    assert.ok(isSutureError(e, "INVALID_ARCHIVE"));
    assert.match(
      e.message,
      /big-format\.deb is not a valid Debian package: its debian-binary member is 105 bytes/,
    );
    return true;
  });
});
