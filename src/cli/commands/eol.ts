import { type Command, Option } from "@commander-js/extra-typings";
import { EOL_PRODUCTS, type EolTable, eolCacheFile, loadEolTable, releaseState } from "../../eol/table.ts";
import { DEFAULT_EOL_API, updateEolTable } from "../../eol/update.ts";
import { SutureError } from "../../errors/errors.ts";
import { defaultCacheDir } from "../../patch/patch.ts";
import { printable, table } from "../../report/render.ts";
import { abortReasonOr, cancelOnSignals } from "../cancel.ts";
import { addTransportOptions, parsePlatformList, transportOptionsFrom } from "../options.ts";

export function registerEol(program: Command): void {
  addTransportOptions(
    program
      .command("eol")
      .description(
        "show distribution releases' end-of-life dates (suture's offline table), or whether an image's release is still supported",
      )
      .argument("[image]", "image reference (see suture --help for transports)")
      .option("--update", "refresh the table from endoflife.date's API into the cache dir")
      .option("--eol-api-url <url>", `endoflife.date API base for --update (default ${DEFAULT_EOL_API})`)
      .option("--cache-dir <dir>", "where --update writes the table (default $XDG_CACHE_HOME/suture)")
      .option("--platform <list>", "of an index, only these platforms, e.g. linux/arm64 (default: all)")
      .addOption(new Option("--format <format>", "output format").choices(["text", "json"]).default("text")),
  ).action(async (image, flags) => {
    const cacheDir = flags.cacheDir ?? defaultCacheDir();
    const { finish, ...transport } = transportOptionsFrom(flags);
    const controller = new AbortController();
    const releaseSignals = cancelOnSignals(controller, "the EOL table's temporary file");
    try {
      if (flags.update) {
        if (image !== undefined)
          throw new SutureError(
            "USAGE",
            "--update takes no image: run suture eol --update, then suture eol IMAGE",
          );
        if (flags.eolApiUrl !== undefined && !/^https?:\/\//.test(flags.eolApiUrl))
          throw new SutureError(
            "USAGE",
            `invalid --eol-api-url ${JSON.stringify(flags.eolApiUrl)}: give an http(s) URL such as ${DEFAULT_EOL_API}`,
          );
        const updated = await updateEolTable({
          cacheDir,
          apiUrl: flags.eolApiUrl,
          progress: transport.progress,
          signal: controller.signal,
        });
        finish();
        const releases = Object.values(updated.products).reduce((n, p) => n + p.releases.length, 0);
        process.stdout.write(
          `updated the EOL table: ${Object.keys(updated.products).length} products, ${releases} releases, as of ${updated.asOf}, in ${eolCacheFile(cacheDir)}\n`,
        );
        return;
      }
      const eolTable = await loadEolTable(cacheDir);
      if (image === undefined) {
        finish();
        process.stdout.write(
          flags.format === "json" ? `${JSON.stringify(eolTable, null, 2)}\n` : renderTable(eolTable),
        );
        return;
      }
      // Loaded here only: see inspect.ts.
      const { inspectImage } = await import("../../index.ts");
      const result = await inspectImage(image, {
        ...transport,
        cacheDir,
        platforms: parsePlatformList(flags.platform),
        signal: controller.signal,
      });
      finish();
      const states = result.images.map((i) => ({ platform: i.platform, ...i.eol! }));
      if (flags.format === "json") {
        process.stdout.write(`${JSON.stringify({ name: result.name, platforms: states }, null, 2)}\n`);
        return;
      }
      for (const s of states)
        process.stdout.write(
          `${states.length > 1 ? `[${s.platform}] ` : ""}${s.status}: ${printable(s.message)}\n`,
        );
    } catch (e) {
      throw abortReasonOr(controller.signal, e);
    } finally {
      releaseSignals();
    }
  });
}

/** Every release of the table with today's state, newest first per product. */
export function renderTable(eolTable: EolTable, now: Date = new Date()): string {
  const rows: string[][] = [];
  for (const name of EOL_PRODUCTS) {
    const product = eolTable.products[name];
    if (!product) continue;
    for (const r of product.releases) {
      const state = releaseState(name, product, r, eolTable.asOf, now);
      rows.push([name, r.name, r.codename ?? "", r.eol ?? "-", r.extended ?? "-", state.status]);
    }
  }
  return `${[
    ...table(["PRODUCT", "RELEASE", "CODENAME", "EOL", "EXTENDED", "STATE"], rows),
    "",
    `Source: ${eolTable.source}`,
  ].join("\n")}\n`;
}
