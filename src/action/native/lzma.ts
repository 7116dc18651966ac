/**
 * What the Action's bundle uses in place of `@napi-rs/lzma` (esbuild `alias` in
 * scripts/build-action.ts). suture decompresses xz and lzma with the host's `xz` whenever there is
 * one (src/archive/compression.ts: it streams, and runs beside us on the other core); the binding
 * is only the fallback for hosts without xz-utils. Every GitHub runner image has xz, so the bundle
 * leaves the 2 MB binding out and says what to install on a host that lacks it.
 */
import { SutureError } from "../../errors/errors.ts";

async function noBinding(): Promise<Buffer> {
  throw new SutureError(
    "SANDBOX",
    "this host has no xz program and the suture Action's bundle decompresses xz only with it: install xz-utils (apt-get install xz-utils) before the step",
  );
}

/** `unavailable` tells compression.ts to use the host's xz even for the small inputs it would decode in process. */
export const xz = { decompress: noBinding, unavailable: true };
export const lzma = { decompress: noBinding, unavailable: true };
