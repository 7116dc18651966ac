/**
 * What a test needs from the machine, and the one place that decides whether it has it.
 *
 *   test("…", await needs("root", "tool:dpkg-deb"), async () => { … });
 *
 * `needs` resolves to node:test options: `{}` when everything is there, else
 * `{ skip: "needs root: run as root or with sudo" }`, so a developer without root, network or a
 * daemon sees why a test did not run instead of a failure deep inside it. When `CI` is set the
 * machine is expected to have everything (CI runs the whole suite as root): a missing requirement
 * there throws, which fails the file, so a skip can never hide a broken CI machine.
 *
 * A file whose every test needs the same things takes node:test's functions from `requiring`:
 *
 *   const { test, before, after } = await requiring("root", "loopback", "tool:skopeo");
 *
 * Its tests then skip with the reason, and its hooks (which would start the registry, the daemon…)
 * do not run, when something is missing.
 *
 * The unit tier (`npm run test:unit`, src/**\/*.test.ts) must pass as an unprivileged user with
 * the network off (`unshare -rn npm run test:unit`): anything a unit test needs beyond that is
 * named here.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import * as nodeTest from "node:test";
import { findOnPath } from "../../src/sandbox/exec.ts";

export type Requirement =
  /** Root of the machine, not of a user namespace: ownership, device nodes, trusted.* xattrs, mounts. */
  | "root"
  /** A non-loopback network interface (the Debian archive, the npm registry). */
  | "network"
  /** A loopback interface to bind test servers on 127.0.0.1 (down under `unshare -n`). */
  | "loopback"
  | "runc"
  | "dockerd"
  /** A PostgreSQL server installation (initdb and postgres in /usr/lib/postgresql/N/bin). */
  | "postgres"
  /** Any other program, by name on PATH (or in the sbin dirs). */
  | `tool:${string}`;

export type RequirementOptions = { skip?: string };

export async function needs(...requirements: Requirement[]): Promise<RequirementOptions> {
  const missing: string[] = [];
  for (const requirement of requirements) {
    const why = await unmet(requirement);
    if (why !== undefined) missing.push(why);
  }
  if (missing.length === 0) return {};
  const reason = missing.join("; ");
  if (process.env.CI) {
    throw new Error(`CI is set, so every test must run here, but a test ${reason}`);
  }
  return { skip: reason };
}

/** Why `requirement` is not met on this machine, or undefined when it is. */
async function unmet(requirement: Requirement): Promise<string | undefined> {
  switch (requirement) {
    case "root":
      return isHostRoot() ? undefined : "needs root: run as root or with sudo";
    case "network":
      return hasInterface(false) ? undefined : "needs the network: no interface besides loopback is up";
    case "loopback":
      return hasInterface(true) ? undefined : "needs loopback: 127.0.0.1 is down (a network namespace?)";
    case "runc":
    case "dockerd":
      return (await findOnPath(requirement))
        ? undefined
        : `needs ${requirement}: install it (npm run lab:install as root)`;
    case "postgres":
      return hasPostgresServer() ? undefined : "needs PostgreSQL: install it (npm run lab:install as root)";
    default: {
      const tool = requirement.slice("tool:".length);
      return (await findOnPath(tool)) ? undefined : `needs ${tool}: install it (npm run lab:install as root)`;
    }
  }
}

/**
 * uid 0 in the host's user namespace. Inside `unshare -r` the process is uid 0 too, but it cannot
 * chown to other ids, create device nodes or set trusted.* xattrs: its uid map is not the
 * identity over the whole range.
 */
function isHostRoot(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    const map = readFileSync("/proc/self/uid_map", "utf8").trim().split(/\s+/);
    return map.length === 3 && map[0] === "0" && map[1] === "0" && map[2] === "4294967295";
  } catch {
    return true; // no /proc: cannot tell a namespace apart, trust the uid
  }
}

/** An interface with an address: internal (loopback) or external. Interfaces that are down have none. */
function hasInterface(internal: boolean): boolean {
  return Object.values(networkInterfaces()).some((addresses) =>
    (addresses ?? []).some((a) => a.internal === internal),
  );
}

/** The server binaries of some installed major version, where Debian's postgresql puts them. */
function hasPostgresServer(): boolean {
  try {
    return readdirSync("/usr/lib/postgresql").some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));
  } catch {
    return false;
  }
}

type Hook = typeof nodeTest.before;

/** node:test's functions for a file whose tests all need `requirements` (see the top of this file). */
export async function requiring(...requirements: Requirement[]): Promise<{
  test: typeof nodeTest.test;
  describe: typeof nodeTest.describe;
  before: Hook;
  after: Hook;
  beforeEach: Hook;
  afterEach: Hook;
}> {
  const { skip } = await needs(...requirements);
  if (skip === undefined) return nodeTest;
  const nothing: Hook = () => {};
  return {
    test: skipping(nodeTest.test, skip),
    describe: skipping(nodeTest.describe, skip),
    before: nothing,
    after: nothing,
    beforeEach: nothing,
    afterEach: nothing,
  };
}

/** `define` (test or describe) with `skip` added to the options of every call. */
function skipping<F extends typeof nodeTest.test | typeof nodeTest.describe>(define: F, skip: string): F {
  const call = define as (...args: unknown[]) => unknown;
  return ((...args: unknown[]) => {
    const at = args.findIndex((a) => typeof a === "function");
    const options = at > 0 && typeof args[at - 1] === "object" ? (args[at - 1] as object) : undefined;
    const name = typeof args[0] === "string" ? [args[0]] : [];
    return call(...name, { ...options, skip }, ...(at >= 0 ? args.slice(at) : []));
  }) as F;
}
