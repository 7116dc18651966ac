import assert from "node:assert/strict";
import { test } from "node:test";
import { decideMode, type HostFacts } from "./doctor.ts";

const none: HostFacts = {
  uid: 1000,
  capSysAdmin: false,
  userNamespaces: false,
  subordinateIds: false,
  overlayInUserNamespace: false,
  fuseOverlayfs: false,
};

test("the patch mode follows what the host allows, strongest first; root, kernel-overlay user namespaces and no namespaces are built", () => {
  const cases: [Partial<HostFacts>, string, boolean, RegExp][] = [
    [{ uid: 0, capSysAdmin: true }, "root", true, /CAP_SYS_ADMIN/],
    // root without CAP_SYS_ADMIN (a container's root): cannot mount.
    [{ uid: 0 }, "no-namespaces", true, /no user namespaces/],
    [
      { userNamespaces: true, overlayInUserNamespace: true, subordinateIds: true },
      "user-namespace",
      true,
      /re-runs itself in a user namespace mapped from your subordinate ids/,
    ],
    [
      { userNamespaces: true, fuseOverlayfs: true },
      "user-namespace",
      false,
      /fuse-overlayfs.*single-id mapping/,
    ],
    // Namespaces but no overlay of either kind: nothing to patch over.
    [{ userNamespaces: true }, "no-namespaces", true, /locked-down/],
    [{}, "no-namespaces", true, /uses the no-namespaces mode .*run it as root/],
  ];
  for (const [facts, mode, supported, reason] of cases) {
    const d = decideMode({ ...none, ...facts });
    assert.deepEqual([d.mode, d.supported], [mode, supported], JSON.stringify(facts));
    assert.match(d.reason, reason);
  }
});
