import assert from "node:assert/strict";
import { test } from "node:test";
import { generateKey } from "openpgp";
import { isSutureError } from "../../errors/errors.ts";
import { imageKeyringProvider } from "../../trust/keyring.ts";
import { parseOsRelease } from "../os-release.ts";
import {
  applyMirrors,
  defaultSourcesFor,
  fileAccessFromMap,
  formatDeb822Sources,
  parseDeb822Sources,
  parseSourcesList,
  readAptSources,
  refuseSourcesMarkedTrusted,
} from "./sources.ts";

// /etc/apt/sources.list.d/debian.sources exactly as the official debian:bookworm image ships it.
const OFFICIAL_BOOKWORM = `Types: deb
# http://snapshot.debian.org/archive/debian/20240904T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20240904T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

const KEYRING = { path: "/usr/share/keyrings/debian-archive-keyring.gpg" };

test("the official debian:bookworm deb822 file gives bookworm, bookworm-updates and bookworm-security", () => {
  const sources = parseDeb822Sources(OFFICIAL_BOOKWORM, "/etc/apt/sources.list.d/debian.sources");
  assert.deepEqual(
    sources.map(({ origin: _, ...s }) => s),
    [
      { uri: "http://deb.debian.org/debian", suite: "bookworm", components: ["main"], signedBy: KEYRING },
      {
        uri: "http://deb.debian.org/debian",
        suite: "bookworm-updates",
        components: ["main"],
        signedBy: KEYRING,
      },
      {
        uri: "http://deb.debian.org/debian-security",
        suite: "bookworm-security",
        components: ["main"],
        signedBy: KEYRING,
      },
    ],
  );
  assert.match(sources[2]!.origin!, /debian\.sources \(entry 2\)/);
});

test("deb822: several URIs × suites, Architectures, Trusted, deb-src-only and Enabled: no entries", () => {
  const sources = parseDeb822Sources(`Types: deb deb-src
URIs: http://a.example/debian/ https://b.example/debian
Suites: stable testing
Components: main contrib
Architectures: amd64 arm64
Trusted: yes

Types: deb-src
URIs: http://a.example/debian
Suites: stable
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: stable
Components: main
`);
  assert.equal(sources.length, 4);
  assert.deepEqual(
    sources.map((s) => `${s.uri} ${s.suite}`),
    [
      "http://a.example/debian stable",
      "http://a.example/debian testing",
      "https://b.example/debian stable",
      "https://b.example/debian testing",
    ],
  );
  assert.deepEqual(sources[0]!.components, ["main", "contrib"]);
  assert.deepEqual(sources[0]!.arch, ["amd64", "arm64"]);
  assert.equal(sources[0]!.trusted, true);
});

test("deb822: an inline armored Signed-By key is recovered and usable as a keyring", async () => {
  const { publicKey } = await generateKey({ userIDs: [{ name: "Inline Repo" }], format: "armored" });
  // deb822 folds the key: each line indented, empty lines written as " .".
  const folded = publicKey
    .trim()
    .split("\n")
    .map((l) => (l === "" ? " ." : ` ${l}`))
    .join("\n");
  const sources = parseDeb822Sources(
    `Types: deb\nURIs: https://repo.example/apt\nSuites: ./\nSigned-By:\n${folded}\n`,
    "inline.sources",
  );
  assert.equal(sources.length, 1);
  assert.equal(sources[0]!.suite, "./");
  assert.deepEqual(sources[0]!.components, []);
  const signedBy = sources[0]!.signedBy;
  assert.ok(signedBy && "inline" in signedBy);
  assert.equal(signedBy.inline, publicKey.trim());
  const ring = await imageKeyringProvider(fileAccessFromMap(new Map()))(sources[0]!);
  assert.equal(ring.keys.length, 1);
  assert.deepEqual(ring.keys[0]!.getUserIDs(), ["Inline Repo"]);
});

test("one-line format: options, comments, deb-src, fingerprints and flat repositories", () => {
  const sources = parseSourcesList(
    `# comment
deb http://deb.debian.org/debian bookworm main contrib non-free-firmware
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian/ bookworm stable # trailing
deb [ trusted=yes lang=none ] http://local.example/repo ./
deb [signed-by=0123456789ABCDEF0123456789ABCDEF01234567] http://fp.example/debian sid main

`,
    "/etc/apt/sources.list",
  );
  assert.deepEqual(
    sources.map(({ origin: _, ...s }) => s),
    [
      {
        uri: "http://deb.debian.org/debian",
        suite: "bookworm",
        components: ["main", "contrib", "non-free-firmware"],
      },
      {
        uri: "https://download.docker.com/linux/debian",
        suite: "bookworm",
        components: ["stable"],
        signedBy: { path: "/etc/apt/keyrings/docker.asc" },
        arch: ["amd64", "arm64"],
      },
      { uri: "http://local.example/repo", suite: "./", components: [], trusted: true },
      {
        uri: "http://fp.example/debian",
        suite: "sid",
        components: ["main"],
        signedBy: { paths: [], fingerprints: ["0123456789ABCDEF0123456789ABCDEF01234567"] },
      },
    ],
  );
  assert.equal(sources[0]!.origin, "/etc/apt/sources.list:2");
});

test("malformed source lines are refused with the file and line", () => {
  for (const bad of [
    "deb http://x.example/debian",
    "rpm http://x.example/ bookworm main",
    "deb [arch] http://x.example/ b main",
  ]) {
    assert.throws(
      () => parseSourcesList(`\n${bad}\n`, "/etc/apt/sources.list"),
      (e: unknown) => isSutureError(e, "INVALID_MANIFEST") && /sources\.list:2/.test(e.message),
    );
  }
  assert.throws(
    () => parseSourcesList("deb http://x.example/debian bookworm\n"),
    (e: unknown) => isSutureError(e, "INVALID_MANIFEST") && /no components/.test(e.message),
  );
  assert.throws(
    () => parseDeb822Sources("Types: deb\nURIs: http://x.example/debian\nComponents: main\n", "x.sources"),
    (e: unknown) => isSutureError(e, "INVALID_MANIFEST") && /x\.sources/.test(e.message),
  );
});

test("readAptSources reads sources.list, then sources.list.d/*.list and *.sources in name order", async () => {
  const files = new Map<string, Buffer>([
    ["/etc/apt/sources.list", Buffer.from("deb http://one.example/debian bookworm main\n")],
    ["/etc/apt/sources.list.d/debian.sources", Buffer.from(OFFICIAL_BOOKWORM)],
    ["/etc/apt/sources.list.d/a-extra.list", Buffer.from("deb http://two.example/debian bookworm main\n")],
    [
      "/etc/apt/sources.list.d/ignored.list.save",
      Buffer.from("deb http://bad.example/debian bookworm main\n"),
    ],
    ["/etc/apt/sources.list.d/notes.txt", Buffer.from("not a source")],
  ]);
  const sources = await readAptSources(fileAccessFromMap(files));
  assert.deepEqual(
    sources.map((s) => `${s.uri} ${s.suite}`),
    [
      "http://one.example/debian bookworm",
      "http://two.example/debian bookworm",
      "http://deb.debian.org/debian bookworm",
      "http://deb.debian.org/debian bookworm-updates",
      "http://deb.debian.org/debian-security bookworm-security",
    ],
  );
  assert.deepEqual(await readAptSources(fileAccessFromMap(new Map())), []);
});

test("defaultSourcesFor: Debian by codename or VERSION_ID, archived releases, Ubuntu archive and ports", () => {
  const bookworm = defaultSourcesFor(
    parseOsRelease('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'),
  );
  assert.deepEqual(
    bookworm.map((s) => `${s.uri} ${s.suite} ${s.components.join(",")}`),
    [
      "http://deb.debian.org/debian bookworm main",
      "http://deb.debian.org/debian bookworm-updates main",
      "http://deb.debian.org/debian-security bookworm-security main",
    ],
  );
  assert.deepEqual(bookworm[0]!.signedBy, KEYRING);
  // Distroless os-release: PRETTY_NAME="Distroless", no codename.
  const distroless = defaultSourcesFor(
    parseOsRelease('PRETTY_NAME="Distroless"\nID=debian\nVERSION_ID="12"\n'),
  );
  assert.equal(distroless[2]!.suite, "bookworm-security");
  const buster = defaultSourcesFor(parseOsRelease("ID=debian\nVERSION_ID=10\n"));
  assert.deepEqual(
    buster.map((s) => `${s.uri} ${s.suite}`),
    ["http://archive.debian.org/debian buster", "http://archive.debian.org/debian-security buster/updates"],
  );
  const noble = parseOsRelease('ID=ubuntu\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n');
  assert.deepEqual(
    defaultSourcesFor(noble).map((s) => `${s.uri} ${s.suite}`),
    [
      "http://archive.ubuntu.com/ubuntu noble",
      "http://archive.ubuntu.com/ubuntu noble-updates",
      "http://security.ubuntu.com/ubuntu noble-security",
    ],
  );
  assert.deepEqual(defaultSourcesFor(noble)[0]!.components, ["main", "restricted", "universe", "multiverse"]);
  assert.ok(
    defaultSourcesFor(noble, { arch: "arm64" }).every(
      (s) => s.uri === "http://ports.ubuntu.com/ubuntu-ports",
    ),
  );
  assert.throws(
    () => defaultSourcesFor(parseOsRelease("ID=alpine\nVERSION_ID=3.19.0\n")),
    (e: unknown) => isSutureError(e, "UNSUPPORTED_OS"),
  );
  assert.throws(
    () => defaultSourcesFor(parseOsRelease("ID=debian\n")),
    (e: unknown) => isSutureError(e, "UNSUPPORTED_OS"),
  );
});

test("applyMirrors swaps matching URIs (trailing slashes ignored) and keeps everything else", () => {
  const sources = parseDeb822Sources(OFFICIAL_BOOKWORM);
  const mirrored = applyMirrors(sources, {
    "http://deb.debian.org/debian/": "http://127.0.0.1:8080/debian/",
  });
  assert.deepEqual(
    mirrored.map((s) => s.uri),
    ["http://127.0.0.1:8080/debian", "http://127.0.0.1:8080/debian", "http://deb.debian.org/debian-security"],
  );
  assert.deepEqual(mirrored[0]!.signedBy, KEYRING);
  assert.equal(sources[0]!.uri, "http://deb.debian.org/debian", "input not modified");
});

test("deb822 output reads back as the same sources, inline keys included", () => {
  const key =
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGRzZXQ=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----";
  const sources = [
    {
      uri: "http://mirror.example/debian",
      suite: "bookworm",
      components: ["main", "contrib"],
      signedBy: { path: "/usr/share/keyrings/debian-archive-keyring.gpg" },
    },
    { uri: "http://mirror.example/flat", suite: "./", components: [], trusted: true, arch: ["amd64"] },
    { uri: "http://mirror.example/inline", suite: "stable", components: ["main"], signedBy: { inline: key } },
  ];
  const back = parseDeb822Sources(formatDeb822Sources(sources), "x");
  assert.deepEqual(
    back.map(({ origin: _origin, ...s }) => s),
    sources,
  );
});

test("check-valid-until per source, in both formats, survives the deb822 round trip; Dir::Etc locations are honoured", async () => {
  const [listed] = parseSourcesList(
    "deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/20240101T000000Z bookworm main\n",
  );
  assert.equal(listed!.checkValidUntil, false);
  const [deb822, strict] = parseDeb822Sources(
    `Types: deb
URIs: http://archive.debian.org/debian
Suites: buster
Components: main
Check-Valid-Until: no

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Check-Valid-Until: yes
`,
  );
  assert.equal(deb822!.checkValidUntil, false);
  assert.equal(strict!.checkValidUntil, true);
  const back = parseDeb822Sources(formatDeb822Sources([deb822!, strict!]));
  assert.deepEqual(
    back.map((s) => s.checkValidUntil),
    [false, true],
  );
  const files = fileAccessFromMap(
    new Map([
      [
        "/etc/apt/sources.list",
        new TextEncoder().encode("deb http://ignored.example/debian bookworm main\n"),
      ],
      ["/srv/apt/main.list", new TextEncoder().encode("deb http://moved.example/debian bookworm main\n")],
      [
        "/srv/apt/parts/extra.list",
        new TextEncoder().encode("deb http://parts.example/debian bookworm main\n"),
      ],
    ]),
  );
  const moved = await readAptSources(files, {
    sourceList: "/srv/apt/main.list",
    sourceParts: "/srv/apt/parts/",
  });
  assert.deepEqual(
    moved.map((s) => s.uri),
    ["http://moved.example/debian", "http://parts.example/debian"],
  );
});

test("a source marked trusted=yes is refused in one line naming it; signed sources pass", () => {
  const signed = parseSourcesList("deb http://deb.debian.org/debian bookworm main\n", "sources.list");
  refuseSourcesMarkedTrusted(signed);
  const marked = parseSourcesList(
    "deb http://deb.debian.org/debian bookworm main\ndeb [trusted=yes] http://repo.example/debian stable main\n",
    "sources.list",
  );
  assert.throws(
    () => refuseSourcesMarkedTrusted(marked),
    (e) =>
      isSutureError(e, "UNTRUSTED") &&
      !e.message.includes("\n") &&
      e.message.includes('"http://repo.example/debian"') &&
      e.message.includes("--allow-insecure-repositories"),
  );
});
