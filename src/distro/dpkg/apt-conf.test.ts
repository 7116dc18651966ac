import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { AptConfig, aptLocations, aptReadsPart, parseAptConf, readAptConfig } from "./apt-conf.ts";
import { fileAccessFromMap } from "./sources.ts";

// Written the ways real images write it: Debian's docker-clean and sid images' snapshot settings,
// scoped blocks, lists, comments of all three kinds, #clear.
const TRICKY = `// the official image's hook
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
/* snapshot.debian.org images
   need this */
Acquire::Check-Valid-Until "false";
Acquire {
  http { Proxy "http://proxy.example:3128/"; Timeout 30; };
  Suture-Test "none"; # comment after a value
};
APT::Default-Release "bookworm"; // trailing comment
Quoted::Value "has // and # inside";
Acquire::Retries "3";
Acquire::Retries::Delay "true";
APT::Install-Recommends false;
Multi::Statement "a"; Multi::Other "b";
List::Items:: "first";
List::Items:: "second";
Gone::Away "x";
Gone::Away::Child "y";
#clear Gone::Away;
`;

test("apt.conf: statements, blocks, lists, comments and #clear read as apt reads them", () => {
  const c = parseAptConf(TRICKY, new AptConfig(), { file: "/etc/apt/apt.conf.d/90test" });
  assert.equal(c.getBool("Acquire::Check-Valid-Until", true), false);
  assert.equal(c.get("acquire::HTTP::proxy"), "http://proxy.example:3128/", "keys ignore case");
  assert.equal(c.get("Acquire::http::Timeout"), "30");
  assert.equal(c.get("Acquire::Suture-Test"), "none");
  assert.equal(c.get("APT::Default-Release"), "bookworm");
  assert.equal(c.get("Quoted::Value"), "has // and # inside");
  assert.equal(c.getBool("APT::Install-Recommends", true), false);
  assert.equal(c.get("Multi::Other"), "b");
  assert.deepEqual(c.getList("List::Items"), ["first", "second"]);
  assert.deepEqual(c.getList("DPkg::Post-Invoke"), ["rm -f /var/cache/apt/archives/*.deb || true"]);
  assert.equal(c.get("Gone::Away"), undefined);
  assert.equal(c.get("Gone::Away::Child"), undefined);
  assert.equal(c.get("Dir::Cache::pkgcache"), "");
});

test("apt.conf: the same file through the real apt-config gives the same values", (t) => {
  let dump: string;
  const dir = mkdtempSync(join(tmpdir(), "suture-aptconf-"));
  try {
    const file = join(dir, "apt.conf");
    mkdirSync(join(dir, "none.d"));
    // Only this file: the host's own apt.conf(.d) must not mix in.
    writeFileSync(file, `Dir::Etc::Parts "${dir}/none.d";\nDir::Etc::Main "${dir}/none";\n${TRICKY}`);
    dump = execFileSync("apt-config", ["dump"], {
      env: { ...process.env, APT_CONFIG: file, LC_ALL: "C" },
      encoding: "utf8",
    });
  } catch (e) {
    t.skip(`no usable apt-config on this host (${(e as Error).message.split("\n")[0]})`);
    return;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const apt = new Map<string, string[]>();
  for (const line of dump.split("\n")) {
    const m = /^(\S+) "(.*)";$/.exec(line);
    if (m) apt.set(m[1]!.toLowerCase(), [...(apt.get(m[1]!.toLowerCase()) ?? []), m[2]!]);
  }
  const ours = new Map<string, string[]>();
  for (const [k, v] of parseAptConf(TRICKY, new AptConfig()).entries()) {
    ours.set(k.toLowerCase(), [...(ours.get(k.toLowerCase()) ?? []), v]);
  }
  for (const [key, values] of ours) assert.deepEqual(apt.get(key), values, `apt-config dump's ${key}`);
  // apt keeps the cleared key as an empty node; its value is gone, as here.
  assert.deepEqual(apt.get("gone::away"), [""]);
  assert.equal(apt.has("gone::away::child"), false);
});

test("apt.conf: syntax apt refuses is one INVALID_MANIFEST line naming file and line; #include is not followed", () => {
  for (const bad of ['A::B "x" "y" "z";', "{ B 1; };", 'A "unterminated', "A { #clear X; };"]) {
    assert.throws(
      () => parseAptConf(bad, new AptConfig(), { file: "/etc/apt/apt.conf" }),
      (e: unknown) =>
        isSutureError(e, "INVALID_MANIFEST") &&
        /^\/etc\/apt\/apt\.conf:1: /.test(e.message) &&
        !e.message.includes("\n"),
    );
  }
  const warnings: string[] = [];
  const c = parseAptConf('#include "/etc/other.conf";\nA::B "1";\n', new AptConfig(), {
    file: "/etc/apt/apt.conf",
    warn: (m) => warnings.push(m),
  });
  assert.equal(c.get("A::B"), "1");
  assert.match(warnings.join(), /#include \/etc\/other\.conf is not followed/);
});

test("apt.conf.d is read in name order before apt.conf; backups and odd names are skipped; Dir::Etc moves files", async () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const files = fileAccessFromMap(
    new Map([
      ["/etc/apt/apt.conf.d/10first", enc('X "from-10";\nDir::Etc::SourceParts "/srv/apt/sources.d";')],
      ["/etc/apt/apt.conf.d/20second.conf", enc('X "from-20";')],
      ["/etc/apt/apt.conf.d/30third.conf.dpkg-old", enc('X "from-backup";')],
      ["/etc/apt/apt.conf.d/40fourth.disabled", enc('X "from-disabled";')],
      [
        "/etc/apt/apt.conf",
        enc('Y "main";\nDir::Etc::Preferences "prefs";\nDir::Etc::TrustedParts "/keys/";'),
      ],
    ]),
  );
  const c = await readAptConfig(files);
  assert.equal(c.get("X"), "from-20");
  assert.equal(c.get("Y"), "main");
  assert.deepEqual(aptLocations(c), {
    sourceList: "/etc/apt/sources.list",
    sourceParts: "/srv/apt/sources.d",
    trusted: "/etc/apt/trusted.gpg",
    trustedParts: "/keys/",
    preferences: "/etc/apt/prefs",
    preferencesParts: "/etc/apt/preferences.d",
  });
  assert.equal(aptReadsPart("99local", ["conf", ""]), true);
  assert.equal(aptReadsPart("99local.conf", ["conf", ""]), true);
  assert.equal(aptReadsPart(".hidden", ["conf", ""]), false);
  assert.equal(aptReadsPart("backports.pref", ["pref", ""]), true);
  assert.equal(aptReadsPart("backports.pref~", ["pref", ""]), false);
  assert.equal(aptReadsPart("with space", ["pref", ""]), false);
});
