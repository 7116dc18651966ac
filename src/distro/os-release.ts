/** Parsed os-release (freedesktop.org format): KEY=value lines, values optionally quoted. */
export interface OsRelease {
  id: string;
  versionId?: string;
  versionCodename?: string;
  prettyName?: string;
  idLike: string[];
  fields: Record<string, string>;
}

export function parseOsRelease(text: string): OsRelease {
  const fields: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let value = m[2]!;
    if ((value.startsWith('"') && value.endsWith('"')) || (value.startsWith("'") && value.endsWith("'"))) {
      value = value.slice(1, -1).replace(/\\(["'\\$`])/g, "$1");
    }
    fields[m[1]!] = value;
  }
  return {
    id: (fields.ID ?? "linux").toLowerCase(),
    versionId: fields.VERSION_ID,
    versionCodename: fields.VERSION_CODENAME,
    prettyName: fields.PRETTY_NAME,
    idLike: (fields.ID_LIKE ?? "").split(/\s+/).filter(Boolean),
    fields,
  };
}
