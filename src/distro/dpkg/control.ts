/**
 * deb822 control-file syntax (dpkg status, Packages, Release, .sources, apt preferences, a .deb's
 * control file): paragraphs separated by blank lines, `Field: value`, continuation lines start
 * with a space or tab, `#` lines are comments. This is the one reader of that syntax; it gives
 * two views of a paragraph:
 * - `ControlField[]` (parseFields): names as spelled, in order, continuation lines kept whole, for
 *   code that rewrites a stanza (the dpkg database);
 * - `ControlParagraph` (parseControl, paragraphOf): a lookup by case-insensitive name, values
 *   trimmed, for code that reads fields.
 */
export type ControlParagraph = Map<string, string>;

/** One `Field: value` as written. */
export interface ControlField {
  name: string;
  /**
   * Everything after the colon with the first line's leading blanks removed; continuation lines
   * keep their leading blank (a value that starts on the next line, like `Conffiles`, starts with
   * a newline).
   */
  value: string;
}

/** The fields of a paragraph's lines (no blank separator lines among them). */
function fieldsOfLines(lines: Iterable<string>): ControlField[] {
  const fields: ControlField[] = [];
  for (const line of lines) {
    if (line === "" || line.startsWith("#")) continue;
    if ((line.startsWith(" ") || line.startsWith("\t")) && fields.length) {
      fields[fields.length - 1]!.value += `\n${line}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    fields.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).replace(/^[ \t]+/, "") });
  }
  return fields;
}

/** One paragraph's fields exactly as written (spelling, order, continuation lines). */
export function parseFields(text: string): ControlField[] {
  return fieldsOfLines(text.split("\n"));
}

/**
 * The lookup view of fields: names lower-cased (a later duplicate wins), the first line trimmed,
 * each continuation line without its one leading blank.
 */
export function paragraphOf(fields: readonly ControlField[]): ControlParagraph {
  const p: ControlParagraph = new Map();
  for (const f of fields) {
    const [first, ...rest] = f.value.split("\n");
    p.set(f.name.toLowerCase(), [first!.trim(), ...rest.map((l) => l.slice(1))].join("\n"));
  }
  return p;
}

/** Every paragraph of a deb822 text (CRLF line ends accepted), as lookups. */
export function parseControl(text: string): ControlParagraph[] {
  const paragraphs: ControlParagraph[] = [];
  let lines: string[] = [];
  const flush = () => {
    const p = paragraphOf(fieldsOfLines(lines));
    if (p.size) paragraphs.push(p);
    lines = [];
  };
  for (const rawLine of text.split("\n")) {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (line.trim() === "") flush();
    else lines.push(line);
  }
  flush();
  return paragraphs;
}

/** A field's value, by case-insensitive name. */
export function field(p: ControlParagraph, name: string): string | undefined {
  return p.get(name.toLowerCase());
}
