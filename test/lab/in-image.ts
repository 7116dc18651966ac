import { join } from "node:path";
import { openImage } from "../../src/image/image.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { openLayoutSource } from "../../src/transports/layout/layout.ts";

export interface LayoutImage {
  ociDir: string;
  /** The layout's tag (default `latest`). */
  tag?: string;
  /** The platform's architecture, Docker's name (default amd64). */
  architecture?: string;
}

/**
 * One platform of an OCI layout's image, materialised by suture's sandbox (layers unpacked under
 * an overlay, runc to run its programs) for `fn`: how tests let an image's own tools (apk, dpkg)
 * judge a result. Layers are cached and sandboxes made under `workDir`; all is gone after `fn`.
 */
export async function inLayoutImage<T>(
  layout: LayoutImage,
  workDir: string,
  fn: (sb: Sandbox) => Promise<T>,
): Promise<T> {
  const source = await openLayoutSource(layout.ociDir, layout.tag ?? "latest", {});
  try {
    const image = await openImage(source, { os: "linux", architecture: layout.architecture ?? "amd64" });
    return await withSandbox(
      image,
      { cacheDir: join(workDir, "layers"), workRoot: join(workDir, "sandboxes"), env: [] },
      fn,
    );
  } finally {
    await source.close();
  }
}
