/**
 * deb822 control-file syntax (dpkg status, Packages, Release, .sources): paragraphs separated by
 * blank lines, `Field: value`, continuation lines start with a space or tab. Field names are
 * case-insensitive; we keep the first spelling seen and look fields up case-insensitively.
 */
export type ControlParagraph = Map<string, string>;

export function parseControl(text: string): ControlParagraph[] {
  const paragraphs: ControlParagraph[] = [];
  let current: ControlParagraph | undefined;
  let lastKey: string | undefined;
  for (const rawLine of text.split("\n")) {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (line.trim() === "") {
      if (current && current.size) paragraphs.push(current);
      current = undefined;
      lastKey = undefined;
      continue;
    }
    if (line.startsWith("#")) continue;
    if ((line.startsWith(" ") || line.startsWith("\t")) && current && lastKey) {
      current.set(lastKey, `${current.get(lastKey)}\n${line.slice(1)}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    current ??= new Map();
    lastKey = line.slice(0, colon).trim().toLowerCase();
    current.set(lastKey, line.slice(colon + 1).trim());
  }
  if (current && current.size) paragraphs.push(current);
  return paragraphs;
}

/** A field's value, by case-insensitive name. */
export function field(p: ControlParagraph, name: string): string | undefined {
  return p.get(name.toLowerCase());
}
