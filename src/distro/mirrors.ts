/**
 * `--mirror FROM=TO`, the same for every package manager: a repository URL that is FROM, or lies
 * under FROM (FROM followed by `/`), is fetched from TO instead, the rest of its path kept. The
 * longest FROM wins; trailing slashes are ignored. Signatures are still checked against the
 * image's keys, so a mirror must serve the same signed metadata.
 */
export function mirroredUrl(url: string, mirrors: Readonly<Record<string, string>>): string {
  const plain = withoutTrailingSlash(url);
  let best: { from: string; to: string } | undefined;
  for (const [rawFrom, rawTo] of Object.entries(mirrors)) {
    const from = withoutTrailingSlash(rawFrom);
    if (plain !== from && !plain.startsWith(`${from}/`)) continue;
    if (!best || from.length > best.from.length) best = { from, to: withoutTrailingSlash(rawTo) };
  }
  return best ? best.to + plain.slice(best.from.length) : plain;
}

function withoutTrailingSlash(uri: string): string {
  return uri.replace(/\/+$/, "");
}
