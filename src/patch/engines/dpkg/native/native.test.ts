import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "node:test";
import { readDpkgDatabase } from "../../../../distro/dpkg/database.ts";
import { type ConfigureFacts, decideConfigure, markConfigured } from "./configure.ts";

const OPENSSL_POSTINST = "625ae8f649ec61f00e1ab53568a84f85f964f10fdbd9f25b800cc229205d1714";
const ldconfig = new Map([["ldconfig", { package: "libc-bin", call: ["/sbin/ldconfig", "-r", "/"] }]]);
const libcPending = { package: "libc-bin", state: "triggers-pending", triggersPending: ["ldconfig"] };

function facts(over: Partial<ConfigureFacts>): ConfigureFacts {
  return { unpacked: [], unsettled: [], nativeTriggers: ldconfig, ...over };
}

test("decideConfigure: library packages (the ldconfig trigger) and openssl's known postinst need no runtime", () => {
  const work = decideConfigure(
    facts({
      unpacked: [
        { package: "libssl3", scripts: [], scriptSha256: [], triggers: ["ldconfig"] },
        {
          package: "openssl",
          scripts: ["openssl postinst configure 3.0.20-1~deb12u2"],
          scriptSha256: [OPENSSL_POSTINST],
          triggers: [],
        },
      ],
      unsettled: [libcPending],
    }),
  );
  assert.deepEqual(work.missing, []);
  assert.deepEqual(work.approximate, []);
  assert.deepEqual(
    work.scripts.map((s) => [s.package, s.equivalent.script, s.args]),
    [["openssl", "postinst", ["configure", "3.0.20-1~deb12u2"]]],
  );
  assert.deepEqual(
    work.triggers.map((t) => t.trigger),
    ["ldconfig"],
  );
});

test("decideConfigure: a changed script text, other scripts, other triggers and half-configured packages need the runtime", () => {
  const work = decideConfigure(
    facts({
      unpacked: [
        {
          package: "openssl",
          scripts: ["openssl postinst configure 1"],
          scriptSha256: ["0".repeat(64)],
          triggers: [],
        },
        {
          package: "libfoo1",
          scripts: ["libfoo1 preinst upgrade 1"],
          scriptSha256: ["1".repeat(64)],
          triggers: ["ldconfig", "/usr/share/man"],
        },
      ],
      unsettled: [
        libcPending,
        { package: "man-db", state: "triggers-pending", triggersPending: ["/usr/share/man"] },
        { package: "tzdata", state: "half-configured", triggersPending: [] },
      ],
    }),
  );
  assert.deepEqual(work.missing, [
    "openssl (postinst)",
    "libfoo1 (preinst, trigger /usr/share/man)",
    "tzdata (configure of a package the image left half-configured)",
  ]);
  // Without a reproducible libc-bin postinst the ldconfig trigger needs the runtime too.
  const noLdconfig = decideConfigure(
    facts({ unpacked: [], unsettled: [libcPending], nativeTriggers: new Map() }),
  );
  assert.deepEqual(noLdconfig.missing, ["libc-bin (trigger ldconfig)"]);
});

test("decideConfigure: ca-certificates is only approximated (debconf does not run), so only a runtime-free mode takes it", () => {
  const work = decideConfigure(
    facts({
      unpacked: [
        {
          package: "ca-certificates",
          scripts: ["ca-certificates postinst configure 1"],
          scriptSha256: ["2".repeat(64)],
          triggers: [],
        },
      ],
      unsettled: [
        {
          package: "ca-certificates",
          state: "triggers-pending",
          triggersPending: ["update-ca-certificates"],
        },
      ],
    }),
  );
  assert.deepEqual(work.missing, []);
  assert.equal(work.approximate.length, 2);
});

test("markConfigured: the unpacked packages and the trigger's interested package end as dpkg --configure --pending leaves them", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-mark-configured-"));
  try {
    await mkdir(join(root, "var/lib/dpkg/info"), { recursive: true });
    await writeFile(
      join(root, "var/lib/dpkg/status"),
      `${[
        "Package: libc-bin\nStatus: install ok triggers-pending\nPriority: required\nArchitecture: amd64\nVersion: 2.36-9+deb12u14\nTriggers-Pending: ldconfig\nDescription: x\n",
        "Package: libssl3\nStatus: install ok unpacked\nPriority: optional\nArchitecture: amd64\nVersion: 3.0.22-1~deb12u2\nConfig-Version: 3.0.20-1~deb12u2\nDescription: y\n",
        "Package: waiter\nStatus: install ok triggers-awaited\nArchitecture: all\nVersion: 1\nConfig-Version: 1\nTriggers-Awaited: libc-bin\nDescription: z\n",
        "Package: other\nStatus: install ok triggers-pending\nArchitecture: all\nVersion: 1\nDescription: w\nTriggers-Pending: /usr/share/man\n",
      ].join("\n")}\n`,
    );
    const db = await readDpkgDatabase(root);
    markConfigured(db, [{ package: "libssl3", architecture: "amd64" }], ["ldconfig"]);
    await db.commit();
    assert.equal(
      await readFile(join(root, "var/lib/dpkg/status"), "utf8"),
      `${[
        "Package: libc-bin\nStatus: install ok installed\nPriority: required\nArchitecture: amd64\nVersion: 2.36-9+deb12u14\nDescription: x\n",
        "Package: libssl3\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: 3.0.22-1~deb12u2\nDescription: y\n",
        "Package: waiter\nStatus: install ok installed\nArchitecture: all\nVersion: 1\nDescription: z\n",
        "Package: other\nStatus: install ok triggers-pending\nArchitecture: all\nVersion: 1\nDescription: w\nTriggers-Pending: /usr/share/man\n",
      ].join("\n")}\n`,
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
