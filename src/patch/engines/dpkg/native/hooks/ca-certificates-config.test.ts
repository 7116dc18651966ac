import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type TestContext } from "node:test";
import { precomputeCaConfigLoop } from "./ca-certificates-config.ts";

/**
 * A config script laid out as ca-certificates' (its selection reads, CERTS_LIST, the find/sort
 * pipeline and the certificate loop as Debian ships them), with the debconf conversation left out:
 * `$1` is the debconf answer trust_new_crts, and it prints the loop's three results.
 */
const SCRIPT = `#!/bin/sh
set -e
if test -f /etc/ca-certificates.conf; then
  CERTSCONF=/etc/ca-certificates.conf
else
  CERTSCONF=/dev/null
fi
CERTS_DISABLED=$(sed -ne 's/^!\\(.*\\)/\\1/p' $CERTSCONF)
CERTS_TRUST=$(sed -e '/^#/d' -e '/^!/d' $CERTSCONF)
CERTS_AVAILABLE=""
CERTS_ENABLED=""
CERTS_LIST="mozilla/A.crt, mozilla/B.crt, mozilla/Gone.crt"
CERTS_NEW=""
trust_new="$1"
if test -d /usr/share/ca-certificates; then
  cd /usr/share/ca-certificates
  crts=$( (find . -type f -name '*.crt' -print | sed -e 's/^\\.\\///'; \\
           echo "$CERTS_LIST" | tr ',' '\\n' | sed -e 's/^[[:space:]]*//') | \\
           sort | uniq)
  for crt in $crts
  do
   if test "$CERTS_AVAILABLE" = ""; then
     CERTS_AVAILABLE="$crt"
   else
     CERTS_AVAILABLE="$CERTS_AVAILABLE, $crt"
   fi
   if (echo "$CERTS_DISABLED" | grep -F -q -x "$crt") > /dev/null 2>&1; then
     :
   elif (echo "$CERTS_TRUST" | grep -F -q -x "$crt") > /dev/null 2>&1; then
     if test "$CERTS_ENABLED" = ""; then
       CERTS_ENABLED="$crt"
     else
       CERTS_ENABLED="$CERTS_ENABLED, $crt"
     fi
   else
     if test "$trust_new" = "yes"; then
       if test "$CERTS_ENABLED" = ""; then
          CERTS_ENABLED="$crt"
       else
          CERTS_ENABLED="$CERTS_ENABLED, $crt"
       fi
     elif test "$trust_new" = "ask"; then
       if test "$CERTS_NEW" = ""; then
          CERTS_NEW="$crt"
       else
          CERTS_NEW="$CERTS_NEW, $crt"
       fi
     else
\t : 
     fi
   fi
  done
else
  # initial installation
  CERTS_AVAILABLE="$CERTS_LIST"
fi
printf '%s\\n' "A=$CERTS_AVAILABLE" "E=$CERTS_ENABLED" "N=$CERTS_NEW"
`;

/** A root with certificates (`names`, below usr/share/ca-certificates) and a selection file. */
async function fakeRoot(t: TestContext, names: string[], conf: string): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "suture-ca-config-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  for (const name of names) {
    const path = join(root, "usr/share/ca-certificates", name);
    await mkdir(join(path, ".."), { recursive: true });
    await writeFile(path, "not a certificate; the loop reads names only\n");
  }
  await mkdir(join(root, "etc"), { recursive: true });
  await writeFile(join(root, "etc/ca-certificates.conf"), conf);
  await mkdir(join(root, "var/lib/dpkg"), { recursive: true });
  return root;
}

/** Run a script text with the root's paths in place of the image's, as `sh` (dash) would in it. */
function runScript(root: string, text: string, trustNew: string): string {
  const local = text
    .replaceAll("/etc/ca-certificates.conf", join(root, "etc/ca-certificates.conf"))
    .replaceAll("/usr/share/ca-certificates", join(root, "usr/share/ca-certificates"))
    .replaceAll("/var/lib/dpkg/", join(root, "var/lib/dpkg/"));
  const r = spawnSync("sh", ["-c", local, "config", trustNew], {
    encoding: "utf8",
    env: { LC_ALL: "C", PATH: "/usr/bin:/bin" },
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

const NAMES = ["mozilla/A.crt", "mozilla/B.crt", "mozilla/C.crt"];

test("the precomputed loop gives the loop's own results for trust_new yes, ask and anything else", async (t) => {
  const root = await fakeRoot(
    t,
    [...NAMES, "local/it's-mine.crt", "local/Ünïcode.crt", "local/sub/.crt", "notes.txt"],
    "# comment\n!mozilla/A.crt\nmozilla/B.crt\n\nlocal/it's-mine.crt\n",
  );
  const r = await precomputeCaConfigLoop(root, SCRIPT, "/var/lib/dpkg/outcome");
  assert.ok("text" in r, "kept" in r ? r.kept : "");
  assert.match(r.text, /local\/it'\\''s-mine\.crt/, "a quote in a name is quoted for the shell");
  for (const trustNew of ["yes", "ask", "no", "odd"])
    assert.equal(
      runScript(root, r.text, trustNew),
      runScript(root, SCRIPT, trustNew),
      `trust_new=${trustNew}`,
    );
  assert.equal(
    await readFile(join(root, "var/lib/dpkg/outcome"), "utf8"),
    "precomputed\n".repeat(4),
    "the guard matched every time",
  );
});

test("inputs that changed after the precomputation fail the guard, and the original loop runs", async (t) => {
  const root = await fakeRoot(t, NAMES, "mozilla/A.crt\nmozilla/B.crt\n");
  const r = await precomputeCaConfigLoop(root, SCRIPT, "/var/lib/dpkg/outcome");
  assert.ok("text" in r);
  await writeFile(join(root, "etc/ca-certificates.conf"), "!mozilla/A.crt\nmozilla/B.crt\n");
  await writeFile(join(root, "usr/share/ca-certificates/mozilla/D.crt"), "new\n");
  assert.equal(runScript(root, r.text, "ask"), runScript(root, SCRIPT, "ask"));
  assert.equal(await readFile(join(root, "var/lib/dpkg/outcome"), "utf8"), "script\n");
});

test("names the shell would split, glob or misread keep the loop as it is", async (t) => {
  for (const [name, why] of [
    ["local/two words.crt", /certificate name/],
    ["local/star*.crt", /certificate name/],
    ["local/new\nline.crt", /certificate name/],
    ["-x.crt", /certificate name/],
  ] as const) {
    const root = await fakeRoot(t, [...NAMES, name], "mozilla/A.crt\n");
    const r = await precomputeCaConfigLoop(root, SCRIPT, "/var/lib/dpkg/outcome");
    assert.ok("kept" in r && why.test(r.kept), `${JSON.stringify(name)}: ${JSON.stringify(r).slice(0, 80)}`);
  }
  const root = await fakeRoot(t, NAMES, "mozilla/A\\n.crt\n");
  const r = await precomputeCaConfigLoop(root, SCRIPT, "/var/lib/dpkg/outcome");
  assert.ok("kept" in r && /backslash/.test(r.kept), "echo would read the backslash");
  const other = await precomputeCaConfigLoop(
    root,
    SCRIPT.replace("  for crt in $crts\n", "  for c in $crts\n"),
    "/x",
  );
  assert.ok("kept" in other, "another layout of the script is left alone");
});
