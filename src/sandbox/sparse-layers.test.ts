import assert from "node:assert/strict";
import { test } from "node:test";
import { wantedInSparseLower } from "./sparse-layers.ts";

test("what sparse lowers extract: everything Debian packages may own, not an application's files", () => {
  for (const rel of [
    "etc/passwd",
    "usr/bin/openssl",
    "usr/lib/x86_64-linux-gnu/libssl.so.3",
    "usr/lib/python3/dist-packages/apt/__init__.py",
    "var/lib/dpkg/status",
    "lib64/ld-linux-x86-64.so.2",
    "bin",
    // ldconfig reads these (native or real), and libc6's ld.so.conf.d names them.
    "usr/local/lib/libmlrt0.so.1",
    "usr/local/lib/x86_64-linux-gnu/libfoo.so",
    "usr/local/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1",
    "usr/local/lib/aarch64-linux-gnu/glibc-hwcaps/power10/libfoo.so",
    // update-ca-certificates adds these to the bundle.
    "usr/local/share/ca-certificates/corp/root.crt",
    // A base layer's own dotfiles.
    "root/.bashrc",
  ])
    assert.equal(wantedInSparseLower(rel), true, rel);
  for (const rel of [
    "usr/local/lib/python3.11/site-packages/torch/__init__.py",
    "usr/local/lib/python3.11/site-packages/torch/_C.so",
    "usr/local/bin/python3",
    "usr/local/share/doc/x",
    "opt/models/weights.bin",
    "home/user/.bashrc",
    "root/.cache/pip/x",
    "srv/data",
    "tmp/x",
    "var/tmp/x",
    "app/main.py",
    "workspace/notebook.ipynb",
    "models/llm.gguf",
    ".dockerenv",
    "entrypoint.sh",
  ])
    assert.equal(wantedInSparseLower(rel), false, rel);
});
