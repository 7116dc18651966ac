/**
 * The order a transaction installs its packages in: what a package needs among them before it,
 * ties by key in code-unit order (so the order does not depend on the repositories' order), and a
 * cycle broken at its first key, as apk and rpm both break one. Which package needs which is the
 * package manager's rule (`needs`: the other keys a key waits for; itself and unknown keys are
 * ignored).
 */
export function dependencyOrder(keys: Iterable<string>, needs: (key: string) => Iterable<string>): string[] {
  const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const sorted = [...new Set(keys)].sort(byKey);
  const known = new Set(sorted);
  /** Key → what it waits for among the keys, and the reverse. */
  const waitsFor = new Map<string, Set<string>>();
  const neededBy = new Map<string, string[]>();
  for (const key of sorted) {
    const set = new Set<string>();
    for (const other of needs(key)) if (other !== key && known.has(other)) set.add(other);
    waitsFor.set(key, set);
    for (const other of set) {
      const list = neededBy.get(other);
      if (list) list.push(key);
      else neededBy.set(other, [key]);
    }
  }
  const ready = sorted.filter((k) => waitsFor.get(k)!.size === 0);
  const done = new Set<string>();
  const out: string[] = [];
  let scan = 0;
  while (out.length < sorted.length) {
    let next = ready.shift();
    if (next === undefined) {
      // A cycle: its first key goes first.
      while (done.has(sorted[scan]!)) scan++;
      next = sorted[scan]!;
    }
    if (done.has(next)) continue;
    done.add(next);
    out.push(next);
    for (const waiting of neededBy.get(next) ?? []) {
      const set = waitsFor.get(waiting)!;
      set.delete(next);
      if (set.size === 0 && !done.has(waiting)) {
        // Kept in key order, so ties go by key.
        let at = ready.findIndex((r) => byKey(r, waiting) > 0);
        if (at === -1) at = ready.length;
        ready.splice(at, 0, waiting);
      }
    }
  }
  return out;
}
