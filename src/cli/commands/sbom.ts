import { type Command, Option } from "@commander-js/extra-typings";
import packageJson from "../../../package.json" with { type: "json" };
import { sourceImageReference } from "../../patch/target.ts";
import { formatReference } from "../../ref/reference.ts";
import { formatTransportReference, parseTransportReference } from "../../ref/transport.ts";
import { buildSbom, SBOM_FORMATS, writeSbom } from "../../sbom/sbom.ts";
import { sourceSubject } from "../../sbom/source.ts";
import { openSource } from "../../transports/index.ts";
import { abortReasonOr, cancelOnSignals } from "../cancel.ts";
import { addTransportOptions, parsePlatformList, transportOptionsFrom } from "../options.ts";

export function registerSbom(program: Command): void {
  addTransportOptions(
    program
      .command("sbom")
      .description("write the SBOM of an image (CycloneDX 1.6 or SPDX 2.3 JSON) from its package databases")
      .argument("<image>", "image reference (see suture --help for transports)")
      .option("--platform <list>", "of an index, only these platforms, e.g. linux/arm64 (default: all)")
      .addOption(new Option("--format <format>", "SBOM format").choices(SBOM_FORMATS).default("cyclonedx"))
      .option("-o, --output <file>", "write the SBOM to this file (default: standard output)"),
  ).action(async (image, flags) => {
    const controller = new AbortController();
    const releaseSignals = cancelOnSignals(controller, "the half-read layers");
    const { finish, ...transport } = transportOptionsFrom(flags);
    try {
      const ref = parseTransportReference(image);
      const named = sourceImageReference(ref);
      const source = await openSource(ref, { ...transport, signal: controller.signal });
      let subject: Awaited<ReturnType<typeof sourceSubject>>;
      try {
        subject = await sourceSubject(source, {
          name: named ? formatReference(named) : formatTransportReference(ref),
          ...(named && ref.transport === "registry"
            ? { repository: `${named.registry}/${named.repository}` }
            : {}),
          platforms: parsePlatformList(flags.platform),
          signal: controller.signal,
        });
      } finally {
        await source.close();
      }
      const doc = buildSbom(flags.format, subject, { toolVersion: packageJson.version });
      finish();
      if (flags.output) await writeSbom(flags.output, doc);
      else process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    } catch (e) {
      throw abortReasonOr(controller.signal, e);
    } finally {
      releaseSignals();
    }
  });
}
