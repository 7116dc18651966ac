import type { Command } from "@commander-js/extra-typings";
import { copyImage } from "../../image/copy.ts";
import { parsePlatform } from "../../oci/platform.ts";
import { parseTransportReference } from "../../ref/transport.ts";
import { openSink, openSource } from "../../transports/index.ts";
import { abortReasonOr, cancelOnSignals } from "../cancel.ts";
import { addTransportOptions, transportOptionsFrom } from "../options.ts";

export function registerCopy(program: Command): void {
  addTransportOptions(
    program
      .command("copy")
      .description(
        "copy an image or index between transports; every platform where the destination can hold an index",
      )
      .argument("<source>", "image to read")
      .argument("<destination>", "where to write it")
      .option(
        "--platform <platform>",
        "for destinations that hold one image (docker-archive, daemon): which platform",
      ),
  ).action(async (src, dst, flags) => {
    const srcRef = parseTransportReference(src);
    const dstRef = parseTransportReference(dst);
    const platform = flags.platform ? parsePlatform(flags.platform) : undefined;
    // Interrupted, the copy stops its transfers and the destination removes what it wrote
    // (partial blobs, temp files, upload sessions) before we exit 130.
    const controller = new AbortController();
    const releaseSignals = cancelOnSignals(controller, "partial blobs and temp files");
    const options = { ...transportOptionsFrom(flags), signal: controller.signal };
    try {
      const source = await openSource(srcRef, options);
      try {
        const sink = await openSink(dstRef, options);
        const root = await copyImage(source, sink, {
          platform,
          progress: options.progress,
          signal: controller.signal,
          maxBlobSize: options.maxBlobSize,
          mountFrom:
            srcRef.transport === "registry"
              ? { registry: srcRef.ref.registry, repository: srcRef.ref.repository }
              : undefined,
        });
        options.finish();
        process.stdout.write(`${root.digest}\n`);
      } finally {
        await source.close();
      }
    } catch (e) {
      throw abortReasonOr(controller.signal, e);
    } finally {
      releaseSignals();
    }
  });
}
