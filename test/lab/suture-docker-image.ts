/**
 * suture in a Docker image, built without Docker Hub (issue 16: `docker run --user 1000:1000`).
 *
 * The image is a lab Debian rootfs plus three thin layers:
 *   base      bookwormSutureRuntime (below): bookworm minbase + what the user-namespace mode runs
 *             (runc, uidmap's setuid newuidmap/newgidmap, mount's mount/umount, xz-utils) + the
 *             user `suture` (1000:1000) with a home and /etc/subuid + /etc/subgid ranges;
 *   node      this checkout's Node 24 (node_modules/node's binary) as /usr/local/bin/node;
 *   deps      the production packages of package-lock.json under /opt/suture/node_modules;
 *   project   package.json, bin/ and src/ under /opt/suture, and /usr/local/bin/suture.
 * The no-namespaces mode needs only node and the project (and xz for speed); the user-namespace
 * mode adds unshare (util-linux, in minbase), newuidmap/newgidmap, mount/umount and runc.
 *
 * Each thin layer is an uncompressed tar, cached in the lab cache under `sutureDockerLayers/` by
 * the hash of its inputs (the node binary; package-lock.json and the installed packages' names;
 * every project file), so only the project layer is rebuilt when the sources change. The image
 * layout (`sutureDocker-<hash>/oci`, its blobs hard links to those) is keyed by the base recipe's
 * hash and the three layer digests. `loadSutureDockerImage` copies it into a (lab) Docker daemon with skopeo.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, realpathSync } from "node:fs";
import {
  chmod,
  cp,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { acquireLock, labCacheDir, releaseLock } from "./cache.ts";
import { bookwormMinbase, type LabRecipe, labImage } from "./images.ts";
import { layoutWriter } from "./oci-layout.ts";

const run = promisify(execFile);
const REPO = join(import.meta.dirname, "../..");
const LAB_EPOCH = 1767225600;
const BUILDER = "suture-docker-1";

export const bookwormSutureRuntime: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormSutureRuntime",
  parent: bookwormMinbase,
  steps: [
    { kind: "apt-install", packages: ["runc", "uidmap", "mount", "xz-utils"] },
    {
      kind: "script",
      script: "suture-docker-user.sh",
      createdBy:
        "/bin/sh -c useradd suture (1000:1000, /home/suture) and give it suture:100000:65536 in /etc/subuid and /etc/subgid",
    },
  ],
};

export interface SutureDockerImage {
  layoutDir: string;
  reference: string;
  /** First 16 hex of the image's key: a tag that changes when any input does. */
  key: string;
}

/** The suture image's OCI layout, built (or taken from the lab cache) from this checkout. */
export async function sutureDockerImage(): Promise<SutureDockerImage> {
  const base = await labImage(bookwormSutureRuntime);
  const node = await cachedLayer("node", await nodeKey(), stageNode);
  const deps = await cachedLayer("deps", await depsKey(), stageDeps);
  const project = await cachedLayer("project", await projectKey(), stageProject);
  const key = sha256(
    `${BUILDER}\n${base.recipeHash}\n${node.digest}\n${deps.digest}\n${project.digest}`,
  ).slice(0, 16);
  const entry = join(labCacheDir(), `sutureDocker-${key}`);
  const layoutDir = join(entry, "oci");
  const done = async () => existsSync(join(entry, "done"));
  if (!(await done()) && (await acquireLock(`${entry}.lock`, done))) {
    try {
      if (!(await done())) await assemble(entry, base.layoutDir, [node, deps, project]);
    } finally {
      await releaseLock(`${entry}.lock`);
    }
  }
  return { layoutDir, reference: `oci:${layoutDir}:latest`, key };
}

/** Copies the image into a Docker daemon as `suture-lab:<key>` and returns that name. */
export async function loadSutureDockerImage(image: SutureDockerImage, dockerHost: string): Promise<string> {
  const name = `suture-lab:${image.key}`;
  await run(
    "skopeo",
    ["copy", "--quiet", "--dest-daemon-host", dockerHost, image.reference, `docker-daemon:${name}`],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  return name;
}

interface CachedLayer {
  path: string;
  digest: string;
  size: number;
  createdBy: string;
}

async function cachedLayer(
  name: string,
  key: string,
  stage: (root: string) => Promise<string>,
): Promise<CachedLayer> {
  const dir = join(labCacheDir(), "sutureDockerLayers");
  await mkdir(dir, { recursive: true });
  const base = join(dir, `${name}-${key.slice(0, 16)}`);
  const meta = `${base}.json`;
  const done = async () => existsSync(meta);
  if (!(await done()) && (await acquireLock(`${base}.lock`, done))) {
    try {
      if (!(await done())) {
        const work = await mkdtemp(`${base}.build-`);
        try {
          const root = join(work, "root");
          await mkdir(root);
          const createdBy = await stage(root);
          const tar = join(work, "layer.tar");
          // Deterministic: sorted names, root-owned, times clamped to the lab epoch.
          await run("tar", [
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            `--mtime=@${LAB_EPOCH}`,
            "--clamp-mtime",
            "-C",
            root,
            "-cf",
            tar,
            ".",
          ]);
          const { digest, size } = await fileDigest(tar);
          await chmod(tar, 0o644);
          await rename(tar, `${base}.tar`);
          await writeFile(meta, JSON.stringify({ digest, size, createdBy }));
        } finally {
          await rm(work, { recursive: true, force: true });
        }
      }
    } finally {
      await releaseLock(`${base}.lock`);
    }
  }
  const m = JSON.parse(await readFile(meta, "utf8")) as Omit<CachedLayer, "path">;
  return { path: `${base}.tar`, ...m };
}

function nodeBinary(): string {
  return realpathSync(join(REPO, "node_modules/node/bin/node"));
}

async function nodeKey(): Promise<string> {
  return (await fileDigest(nodeBinary())).digest.slice("sha256:".length);
}

async function stageNode(root: string): Promise<string> {
  await mkdir(join(root, "usr/local/bin"), { recursive: true });
  await cp(nodeBinary(), join(root, "usr/local/bin/node"));
  await chmod(join(root, "usr/local/bin/node"), 0o755);
  return "COPY node_modules/node/bin/node /usr/local/bin/node # the checkout's Node 24";
}

/** package-lock.json's non-dev packages that are installed here (other platforms' optional ones are not). */
async function productionPackages(): Promise<string[]> {
  const lock = JSON.parse(await readFile(join(REPO, "package-lock.json"), "utf8")) as {
    packages: Record<string, { dev?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([path, p]) => path.startsWith("node_modules/") && !p.dev)
    .map(([path]) => path)
    .filter((path) => existsSync(join(REPO, path)))
    .sort();
}

async function depsKey(): Promise<string> {
  const lock = await readFile(join(REPO, "package-lock.json"));
  return sha256(`${sha256(lock)}\n${(await productionPackages()).join("\n")}`);
}

async function stageDeps(root: string): Promise<string> {
  for (const path of await productionPackages()) {
    const to = join(root, "opt/suture", path);
    // Nested packages are copied with their parent; copying them again would only overwrite.
    if (existsSync(to)) continue;
    await mkdir(join(to, ".."), { recursive: true });
    await cp(realpathSync(join(REPO, path)), to, {
      recursive: true,
      dereference: true,
      // Dev packages nested under a production package's own node_modules stay out.
      filter: (src) => !/\/node_modules\/\.bin(\/|$)/.test(src),
    });
  }
  return "COPY node_modules /opt/suture/node_modules # package-lock.json's production packages";
}

const PROJECT_PARTS = ["package.json", "bin", "src"];

async function projectFiles(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const st = await lstat(join(REPO, rel));
    if (st.isDirectory()) {
      for (const name of (await readdir(join(REPO, rel))).sort()) await walk(join(rel, name));
    } else out.push(rel);
  };
  for (const part of PROJECT_PARTS) await walk(part);
  return out;
}

async function projectKey(): Promise<string> {
  const h = createHash("sha256");
  for (const rel of await projectFiles()) {
    const st = await lstat(join(REPO, rel));
    h.update(`${rel}\0${st.mode.toString(8)}\0`);
    h.update(st.isSymbolicLink() ? `->${realpathSync(join(REPO, rel))}` : await readFile(join(REPO, rel)));
    h.update("\n");
  }
  return h.digest("hex");
}

async function stageProject(root: string): Promise<string> {
  const opt = join(root, "opt/suture");
  await mkdir(opt, { recursive: true });
  for (const rel of await projectFiles()) {
    await mkdir(join(opt, rel, ".."), { recursive: true });
    await cp(join(REPO, rel), join(opt, rel), { verbatimSymlinks: true });
  }
  await mkdir(join(root, "usr/local/bin"), { recursive: true });
  await symlink("/opt/suture/bin/suture", join(root, "usr/local/bin/suture"));
  return `COPY ${PROJECT_PARTS.join(" ")} /opt/suture/ # this checkout`;
}

async function assemble(entry: string, baseLayout: string, layers: CachedLayer[]): Promise<void> {
  const work = await mkdtemp(`${entry}.build-`);
  try {
    const layout = join(work, "oci");
    const writer = await layoutWriter(layout);
    const index = JSON.parse(await readFile(join(baseLayout, "index.json"), "utf8"));
    const blob = (d: string) => readFile(join(baseLayout, "blobs", "sha256", d.slice(7)));
    const manifest = JSON.parse((await blob(index.manifests[0].digest)).toString("utf8"));
    const config = JSON.parse((await blob(manifest.config.digest)).toString("utf8"));
    for (const l of manifest.layers) await writer.reuse(baseLayout, l.digest);
    const created = new Date(LAB_EPOCH * 1000).toISOString();
    for (const l of layers) {
      // Hard links: an entry per source change costs no copy of the node and deps layers.
      const to = join(layout, "blobs", "sha256", l.digest.slice(7));
      await rm(to, { force: true });
      await link(l.path, to).catch(() => cp(l.path, to));
      manifest.layers.push({
        mediaType: "application/vnd.oci.image.layer.v1.tar",
        digest: l.digest,
        size: l.size,
      });
      config.rootfs.diff_ids.push(l.digest);
      config.history.push({ created, created_by: l.createdBy });
    }
    config.created = created;
    config.config = {
      ...config.config,
      Env: [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "XDG_CACHE_HOME=/tmp/suture-cache",
      ],
      Entrypoint: ["/usr/local/bin/suture"],
      Cmd: ["doctor"],
      WorkingDir: "/tmp",
    };
    const configDesc = await writer.put(Buffer.from(JSON.stringify(config)));
    manifest.config = { ...manifest.config, ...configDesc };
    const manifestDesc = await writer.put(Buffer.from(JSON.stringify(manifest)));
    await writer.tag("application/vnd.oci.image.manifest.v1+json", manifestDesc);
    await writeFile(join(work, "done"), `${new Date().toISOString()}\n`);
    await run("chmod", ["-R", "a+rX", work]);
    await rm(entry, { recursive: true, force: true });
    await rename(work, entry);
  } catch (e) {
    await rm(work, { recursive: true, force: true });
    throw e;
  }
}

async function fileDigest(path: string): Promise<{ digest: string; size: number }> {
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${h.digest("hex")}`, size };
}

function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}
