import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type ConffileAction,
  type ConffilePolicy,
  decideConffile,
  droppedConffileFate,
  excludedConffileHash,
  NEWCONFFILE,
  NONEXISTENT,
  SUTURE_CONFFILE_POLICY,
} from "./conffile-decision.ts";

// Hashes stand for file contents: OLD is what the old package shipped, EDIT what the image's
// author made of it, NEW what the new package ships.
const OLD = "0ld";
const EDIT = "ed17";
const NEW = "ne3";

const none: ConffilePolicy = { confdef: false, confold: false, confnew: false, confmiss: false };
const confold: ConffilePolicy = { ...none, confold: true };
const confnew: ConffilePolicy = { ...none, confnew: true };
const confdef: ConffilePolicy = { ...none, confdef: true };
const confdefConfnew: ConffilePolicy = { ...none, confdef: true, confnew: true };
const confmiss: ConffilePolicy = { ...SUTURE_CONFFILE_POLICY, confmiss: true };

type Row = [
  situation: string,
  recorded: string | undefined,
  current: string,
  incoming: string,
  want: ConffileAction,
];

// dpkg's table (configure.c): user edited × distributor edited, plus the missing and new-conffile rows.
// The last column is what `dpkg --force-confdef --force-confold` (suture) does.
const SUTURE_ROWS: Row[] = [
  ["unchanged by the user, unchanged by the package", OLD, OLD, OLD, "identical"],
  ["unchanged by the user, changed by the package", OLD, OLD, NEW, "install"],
  ["edited by the user, unchanged by the package", OLD, EDIT, OLD, "keep"],
  ["edited by the user, changed by the package", OLD, EDIT, NEW, "keep-dist"],
  ["edited by the user into exactly the new version", OLD, NEW, NEW, "identical"],
  ["deleted by the user, unchanged by the package: stays deleted", OLD, NONEXISTENT, OLD, "keep"],
  [
    "deleted by the user, changed by the package: stays deleted, new one beside",
    OLD,
    NONEXISTENT,
    NEW,
    "keep-dist",
  ],
  ["fresh install, nothing on disk", undefined, NONEXISTENT, NEW, "install"],
  ["fresh install, a different file already on disk", undefined, EDIT, NEW, "keep-dist"],
  ["fresh install, the same file already on disk", undefined, NEW, NEW, "identical"],
  ["unpacked but never configured, nothing on disk", NEWCONFFILE, NONEXISTENT, NEW, "install"],
  ["unpacked but never configured, a file on disk", NEWCONFFILE, EDIT, NEW, "keep-dist"],
];

test("conffiles under suture's policy (--force-confdef --force-confold): every row of dpkg's table", () => {
  for (const [situation, recorded, current, incoming, want] of SUTURE_ROWS) {
    assert.equal(decideConffile({ recorded, current, incoming }), want, situation);
    assert.equal(decideConffile({ recorded, current, incoming }, SUTURE_CONFFILE_POLICY), want, situation);
  }
});

test("the forcing options only answer the prompt; the rows without one are the same under every policy", () => {
  const prompted = (r: Row) => r[4] === "keep-dist";
  for (const policy of [none, confold, confnew, confdef, confdefConfnew]) {
    for (const [situation, recorded, current, incoming, want] of SUTURE_ROWS.filter((r) => !prompted(r)))
      assert.equal(decideConffile({ recorded, current, incoming }, policy), want, situation);
  }
  // The rows where dpkg asks "keep your version or install the package's?":
  const answers: [string, ConffilePolicy, ConffileAction][] = [
    ["no option: dpkg asks", none, "ask"],
    ["--force-confold keeps, new version as .dpkg-dist", confold, "keep-dist"],
    ["--force-confnew installs, old version as .dpkg-old", confnew, "install-backup"],
    ["--force-confdef takes the default, which is to keep", confdef, "keep-dist"],
    ["--force-confdef wins over --force-confnew: there is a default", confdefConfnew, "keep-dist"],
  ];
  for (const [situation, recorded, current, incoming] of SUTURE_ROWS.filter(prompted)) {
    for (const [how, policy, want] of answers)
      assert.equal(decideConffile({ recorded, current, incoming }, policy), want, `${situation}: ${how}`);
  }
});

test("--force-confmiss brings back a deleted conffile; a present one is decided as without it", () => {
  assert.equal(decideConffile({ recorded: OLD, current: NONEXISTENT, incoming: OLD }, confmiss), "install");
  assert.equal(decideConffile({ recorded: OLD, current: NONEXISTENT, incoming: NEW }, confmiss), "install");
  assert.equal(decideConffile({ recorded: OLD, current: EDIT, incoming: NEW }, confmiss), "keep-dist");
  assert.equal(decideConffile({ recorded: OLD, current: OLD, incoming: NEW }, confmiss), "install");
});

test("a conffile the image's dpkg configuration excludes keeps the hash it had", () => {
  assert.equal(excludedConffileHash(OLD), OLD);
  assert.equal(excludedConffileHash(NEWCONFFILE), NEWCONFFILE);
  assert.equal(excludedConffileHash(undefined), NEWCONFFILE, "never installed: dpkg's placeholder");
});

test("a conffile the new version dropped: removed when flagged, forgotten when owned elsewhere, else obsolete", () => {
  const rows: [removeOnUpgrade: boolean, ownedByAnother: boolean, want: string][] = [
    [true, false, "remove"],
    [true, true, "remove"],
    [false, true, "forget"],
    [false, false, "obsolete"],
  ];
  for (const [flagged, owned, want] of rows)
    assert.equal(droppedConffileFate(flagged, owned), want, `remove-on-upgrade ${flagged}, owned ${owned}`);
});
