import type { Command } from "@commander-js/extra-typings";
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
  ).action(async (source, destination, flags) => {
    // The library surface (index.ts) is loaded by the commands that use it only: it brings bulk's
    // modules, which `suture patch` never needs (every command module is imported to build the program).
    const { copyImage } = await import("../../index.ts");
    // Interrupted, the copy stops its transfers and the destination removes what it wrote
    // (partial blobs, temp files, upload sessions) before we exit 130.
    const controller = new AbortController();
    const releaseSignals = cancelOnSignals(controller, "partial blobs and temp files");
    const { finish, ...transport } = transportOptionsFrom(flags);
    try {
      const { digest } = await copyImage(source, destination, {
        ...transport,
        platform: flags.platform,
        signal: controller.signal,
      });
      finish();
      process.stdout.write(`${digest}\n`);
    } catch (e) {
      throw abortReasonOr(controller.signal, e);
    } finally {
      releaseSignals();
    }
  });
}
