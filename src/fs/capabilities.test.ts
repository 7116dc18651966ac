import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import { capabilityXattr } from "./capabilities.ts";

/** The value as `getfattr -e hex -n security.capability` prints it after libcap's setcap. */
const hex = (text: string) => capabilityXattr(text)?.toString("hex");

test("capabilities text becomes the kernel's revision-2 vfs_cap_data, as libcap writes it", () => {
  // cap_net_raw is 13: permitted bit 13, effective flag set.
  assert.equal(hex("cap_net_raw+ep"), "0100000200200000000000000000000000000000");
  assert.equal(hex("cap_net_raw,cap_net_bind_service=ep"), "0100000200240000000000000000000000000000");
  // Inheritable only, no effective flag.
  assert.equal(hex("cap_chown+i"), "0000000200000000010000000000000000000000");
  // A capability above 31 lands in the high words (cap_bpf is 39).
  assert.equal(hex("cap_bpf=p"), "0000000200000000000000008000000000000000");
  // Numbers, upper case, several clauses, and a later clause taking away.
  assert.equal(hex("13=p CAP_NET_RAW+e cap_chown=p cap_chown-p"), "0100000200200000000000000000000000000000");
});

test("capabilities that grant nothing write no attribute", () => {
  assert.equal(capabilityXattr(""), undefined);
  assert.equal(capabilityXattr("cap_net_raw=p cap_net_raw-p"), undefined);
});

test("unreadable capabilities are a one-line error naming them", () => {
  for (const bad of ["cap_no_such+ep", "cap_net_raw", "cap_net_raw+", "cap_net_raw+x", "cap_net_raw+e"])
    assert.throws(
      () => capabilityXattr(bad),
      (e: unknown) =>
        isSutureError(e, "INVALID_ARCHIVE") &&
        e.message.includes(JSON.stringify(bad)) &&
        !e.message.includes("\n"),
      bad,
    );
});
