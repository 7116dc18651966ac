/**
 * `suture doctor` on this machine, as root and as an unprivileged user (the Podman lab's user,
 * which has subordinate ids): the mode it reports comes from real probes (a user namespace
 * created, an overlay mounted in it), and the exit code says whether this build patches in it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { SUTURE } from "../lab/cli.ts";
import { ensureRootlessUser, ROOTLESS_USER } from "../lab/podman.ts";
import { requiring } from "../lab/requirements.ts";

const { before, test } = await requiring("root", "tool:newuidmap", "tool:unshare");
const run = promisify(execFile);

before(ensureRootlessUser);

interface Diagnosis {
  mode: string;
  supported: boolean;
  checks: { id: string; ok: boolean; detail: string }[];
}

async function doctor(asUser?: string): Promise<{ code: number; diagnosis: Diagnosis }> {
  const args = ["doctor", "--format", "json"];
  const [file, argv] = asUser
    ? ["runuser", ["-u", asUser, "--", "env", `PATH=${process.env.PATH}`, "HOME=/tmp", SUTURE, ...args]]
    : [SUTURE, args];
  try {
    const { stdout } = await run(file, argv as string[]);
    return { code: 0, diagnosis: JSON.parse(stdout) };
  } catch (e) {
    const err = e as { code: number; stdout: string };
    return { code: err.code, diagnosis: JSON.parse(err.stdout) };
  }
}

const check = (d: Diagnosis, id: string) => d.checks.find((c) => c.id === id)!;

test("as root: the root mode, supported (exit 0), with runc found", async () => {
  const { code, diagnosis } = await doctor();
  assert.equal(code, 0);
  assert.deepEqual([diagnosis.mode, diagnosis.supported], ["root", true]);
  assert.equal(check(diagnosis, "runc").ok, true);
});

test("as a user with subordinate ids: the user-namespace mode, probed for real, supported (exit 0)", async () => {
  const { code, diagnosis } = await doctor(ROOTLESS_USER);
  assert.equal(code, 0);
  assert.equal(diagnosis.mode, "user-namespace");
  assert.equal(diagnosis.supported, true);
  assert.equal(check(diagnosis, "root").ok, false);
  assert.equal(check(diagnosis, "user-namespaces").ok, true);
  assert.equal(
    check(diagnosis, "overlay-in-user-namespace").ok,
    true,
    check(diagnosis, "overlay-in-user-namespace").detail,
  );
  assert.match(check(diagnosis, "subordinate-ids").detail, new RegExp(`/etc/subuid has ${ROOTLESS_USER}`));
});
