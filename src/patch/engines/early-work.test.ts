import assert from "node:assert/strict";
import { test } from "node:test";
import type { ImageFileAccess } from "../../fs/in-root.ts";
import type { ProgressEvent } from "../../progress/events.ts";
import { EarlyWork } from "./early-work.ts";

function filesOf(tree: Record<string, string>): ImageFileAccess {
  return {
    readFile: async (path) => (path in tree ? Buffer.from(tree[path]!) : undefined),
    listDir: async (path) =>
      Object.keys(tree)
        .filter((p) => p.startsWith(`${path}/`))
        .map((p) => p.slice(path.length + 1).split("/")[0]!)
        .sort(),
  };
}

const owner = {};
const readSources = async (files: ImageFileAccess, progress: (e: ProgressEvent) => void) => {
  progress({ type: "info", message: "opened early" });
  const names = await files.listDir("/etc/apt/sources.list.d");
  const texts = await Promise.all(names.map((n) => files.readFile(`/etc/apt/sources.list.d/${n}`)));
  return texts.map((t) => Buffer.from(t!).toString());
};

test("the early result is handed over, with its progress, when every read agrees with the finished tree", async () => {
  const tree = { "/etc/apt/sources.list.d/debian.sources": "URIs: http://deb.debian.org/debian" };
  const work = new EarlyWork(owner, filesOf(tree), undefined, readSources);
  const events: ProgressEvent[] = [];
  assert.deepEqual(await work.take(filesOf(tree), (e) => events.push(e)), {
    value: ["URIs: http://deb.debian.org/debian"],
  });
  assert.deepEqual(events, [{ type: "info", message: "opened early" }]);
  assert.equal(await work.take(filesOf(tree), () => {}), undefined, "taken once");
});

test("a file the finished tree has otherwise discards the early result and says why", async () => {
  const early = { "/etc/apt/sources.list.d/debian.sources": "URIs: http://deb.debian.org/debian" };
  const finished = {
    ...early,
    "/etc/apt/sources.list.d/extra.sources": "URIs: http://mirror.example/debian",
  };
  const work = new EarlyWork(owner, filesOf(early), undefined, readSources);
  const events: ProgressEvent[] = [];
  assert.equal(await work.take(filesOf(finished), (e) => events.push(e)), undefined);
  assert.equal(events.length, 1);
  assert.match(
    String((events[0] as { message: string }).message),
    /sources\.list\.d changed after the early read/,
  );
});

test("its failure is the answer when the reads agree; a failed early read only discards it", async () => {
  const tree = { "/etc/apt/sources.list.d/x.sources": "broken" };
  const failing = new EarlyWork(owner, filesOf(tree), undefined, async (files) => {
    await files.readFile("/etc/apt/sources.list.d/x.sources");
    throw new Error("malformed sources");
  });
  await assert.rejects(
    failing.take(filesOf(tree), () => {}),
    /malformed sources/,
  );

  const broken: ImageFileAccess = {
    readFile: async () => {
      throw new Error("layer dir moved");
    },
    listDir: async () => [],
  };
  const unlucky = new EarlyWork(owner, broken, undefined, async (files) => files.readFile("/etc/os-release"));
  assert.equal(await unlucky.take(filesOf(tree), () => {}), undefined);
});

test("cancel stops work that waits on the view, and a cancelled work is never taken", async () => {
  let release: (() => void) | undefined;
  const blocked: ImageFileAccess = {
    readFile: () => new Promise((_, fail) => (release = () => fail(new Error("closed")))),
    listDir: async () => [],
  };
  const work = new EarlyWork(owner, blocked, undefined, async (files, _p, signal) => {
    signal.addEventListener("abort", () => release?.());
    return files.readFile("/etc/os-release");
  });
  await work.cancel();
  assert.equal(await work.take(filesOf({}), () => {}), undefined);
});

test("a result nobody takes, or that the finished tree contradicts, is disposed of (its open files closed)", async () => {
  const tree = { "/etc/os-release": "ID=debian" };
  const disposed: string[] = [];
  const run = async (files: ImageFileAccess) =>
    Buffer.from((await files.readFile("/etc/os-release"))!).toString();
  const untaken = new EarlyWork(owner, filesOf(tree), undefined, run, (v) => disposed.push(`untaken ${v}`));
  await untaken.cancel();
  const contradicted = new EarlyWork(owner, filesOf(tree), undefined, run, (v) =>
    disposed.push(`contradicted ${v}`),
  );
  assert.equal(await contradicted.take(filesOf({ "/etc/os-release": "ID=ubuntu" }), () => {}), undefined);
  const taken = new EarlyWork(owner, filesOf(tree), undefined, run, (v) => disposed.push(`taken ${v}`));
  assert.deepEqual(await taken.take(filesOf(tree), () => {}), { value: "ID=debian" });
  await taken.cancel();
  assert.deepEqual(disposed, ["untaken ID=debian", "contradicted ID=debian"]);
});
