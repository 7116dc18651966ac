import assert from "node:assert/strict";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { regenerateCaBundle } from "./script-effects.ts";

// The host (Debian 12 with ca-certificates) ran the real update-ca-certificates: our bundle from the
// same inputs must be byte-identical to the one it wrote.
test("the CA bundle is rebuilt exactly as update-ca-certificates builds it; deselected certificates stay out", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-ca-"));
  try {
    await cp("/usr/share/ca-certificates", join(root, "usr/share/ca-certificates"), { recursive: true });
    await cp("/usr/local/share/ca-certificates", join(root, "usr/local/share/ca-certificates"), {
      recursive: true,
      dereference: true,
    }).catch(() => undefined);
    await mkdir(join(root, "etc/ssl/certs"), { recursive: true });
    await cp("/etc/ca-certificates.conf", join(root, "etc/ca-certificates.conf"));
    await writeFile(join(root, "etc/ssl/certs/ca-certificates.crt"), "stale\n");

    assert.equal(await regenerateCaBundle(root), true);
    assert.deepEqual(
      await readFile(join(root, "etc/ssl/certs/ca-certificates.crt")),
      await readFile("/etc/ssl/certs/ca-certificates.crt"),
    );

    const conf = await readFile(join(root, "etc/ca-certificates.conf"), "utf8");
    const first = conf.split("\n").find((l) => l.startsWith("mozilla/"))!;
    await writeFile(join(root, "etc/ca-certificates.conf"), conf.replace(`${first}\n`, `!${first}\n`));
    await regenerateCaBundle(root);
    const pem = (await readFile(join(root, "usr/share/ca-certificates", first), "utf8")).trim();
    const bundle = await readFile(join(root, "etc/ssl/certs/ca-certificates.crt"), "utf8");
    assert.ok(!bundle.includes(pem), "a certificate the image deselected is not trusted again");
    assert.match(
      await readFile(join(root, "etc/ca-certificates.conf"), "utf8"),
      new RegExp(`^!${first.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m"),
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("an image without a bundle or conf is left alone", async () => {
  const root = await mkdtemp(join(tmpdir(), "suture-ca-"));
  try {
    await mkdir(join(root, "usr/share/ca-certificates/mozilla"), { recursive: true });
    assert.equal(await regenerateCaBundle(root), false);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
