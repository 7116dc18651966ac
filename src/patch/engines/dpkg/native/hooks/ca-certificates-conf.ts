import { rename } from "node:fs/promises";
import { writeFileReplacing } from "../../../../../distro/dpkg/database.ts";
import { foundInRoot, readFileInRootSync, walkInRoot } from "../../../../../fs/in-root.ts";

/**
 * The part of ca-certificates' postinst (bookworm) that rewrites `/etc/ca-certificates.conf` from
 * the debconf answers (`ca-certificates/enable_crts`: the choices offered and those enabled), done
 * natively. The shell loop forks several greps and seds per line of the file, minutes under QEMU.
 * `available` and `enabled` are the comma-separated values the postinst read from debconf (the
 * debconf part still runs in the image). Values the shell would treat specially (backslashes for
 * `read`/`echo`, regular-expression characters for `grep "^$ca"`, a leading `-` for `echo`) are
 * reported as unsupported, and the caller runs the script's own text instead.
 */
export async function rewriteCaSelection(
  root: string,
  available: string,
  enabled: string,
): Promise<{ done: true; changed: boolean } | { done: false; unsupported: string }> {
  const conf = walkInRoot(root, "/etc/ca-certificates.conf", { followFinal: false, mustExist: true });
  if (conf.kind !== "found" || !conf.stat.isFile())
    return { done: false, unsupported: "no regular ca-certificates.conf" };
  const bytes = readFileInRootSync(root, "/etc/ca-certificates.conf")!;
  const text = bytes.toString("utf8");
  if (!Buffer.from(text).equals(bytes))
    return { done: false, unsupported: "ca-certificates.conf is not UTF-8" };
  for (const [what, value] of [
    ["ca-certificates.conf", text],
    ["the debconf choices", available],
    ["the debconf answer", enabled],
  ] as const)
    if (value.includes("\\")) return { done: false, unsupported: `a backslash in ${what}` };

  // `while read line`: the text after the last newline is never read; whitespace is trimmed.
  const lines = text.split("\n").slice(0, -1).map(readTrim);
  const valuesOf = (list: string) => list.split(",").map((v) => v.replace(/^[ \t\n\v\f\r]+/, ""));
  const enabledValues = valuesOf(enabled);
  const availableValues = valuesOf(available);
  const names = [
    ...lines.filter((l) => !l.startsWith("#")).map((l) => (l.startsWith("!") ? l.slice(1) : l)),
    ...enabledValues.map(readTrim),
    ...availableValues.map(readTrim),
  ];
  for (const name of names)
    if (/[[\]*^$]/.test(name) || name.startsWith("-"))
      return { done: false, unsupported: `the certificate name ${JSON.stringify(name)}` };

  // memberp: `grep -q "^$m\$"` over the list's values; `.` is the only special character left.
  const pattern = (name: string, whole: boolean) =>
    new RegExp(`^${name.replace(/[.+?(){}|/]/g, (c) => (c === "." ? "." : `\\${c}`))}${whole ? "$" : ""}`);
  // Each name's expression is compiled once, not once per value it is tried on (a few hundred
  // names against as many values: tens of thousands of compilations, ~30 ms).
  const memberp = (name: string, values: string[]) => {
    const whole = pattern(name, true);
    return values.some((v) => whole.test(v));
  };
  // Synchronous, as per-entry filesystem work is: a line of the file each.
  const isFile = (path: string) => foundInRoot(root, path)?.stat.isFile() ?? false;

  const out: string[] = [];
  for (const line of lines) {
    if (line.startsWith("#")) {
      out.push(line);
      continue;
    }
    const ca = line.startsWith("!") ? line.slice(1) : line;
    if (memberp(ca, enabledValues)) out.push(ca);
    else if (memberp(ca, availableValues) || line.startsWith("!")) out.push(`!${ca}`);
    else if (isFile(`/usr/share/ca-certificates/${ca}`) || isFile(`/usr/local/share/ca-certificates/${ca}`))
      out.push(ca);
    else out.push(`!${ca}`);
  }
  // `grep -q "^$ca"` on the file being written: a prefix match against its lines so far.
  const hasLineStarting = (prefix: string) => {
    const start = pattern(prefix, false);
    return out.some((l) => start.test(l));
  };
  if (!/^([ \t\v\f\r]*,)*[ \t\v\f\r]*$/.test(enabled))
    for (const ca of enabledValues.map(readTrim)) if (!hasLineStarting(ca)) out.push(ca);
  for (const ca of availableValues.map(readTrim)) {
    if (memberp(ca, enabledValues) || hasLineStarting(`!${ca}`)) continue;
    out.push(`!${ca}`);
  }

  const rewritten = Buffer.from(out.map((l) => `${l}\n`).join(""));
  if (rewritten.equals(bytes)) return { done: true, changed: false };
  // `mv -f conf conf.dpkg-old; mv conf.dpkg-new conf`: the old file keeps its inode and metadata.
  await rename(conf.host, `${conf.host}.dpkg-old`);
  await writeFileReplacing(conf.host, rewritten, 0o644);
  return { done: true, changed: true };
}

/** What `read` leaves of a line with the default IFS (backslashes were refused). */
function readTrim(line: string): string {
  return line.replace(/^[ \t\n]+|[ \t\n]+$/g, "");
}
