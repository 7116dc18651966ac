import { createHash } from "node:crypto";
import {
  type DatabasePackage,
  type DpkgDatabase,
  fieldValue,
  orderStatusFields,
  withField,
} from "../../../../distro/dpkg/database.ts";
import { readFileInRoot } from "../../../../fs/in-root.ts";
import type { ProgressSink } from "../../../../progress/events.ts";
import { runLdconfig } from "./hooks/ld-so-cache.ts";
import { NATIVE_SCRIPTS, NATIVE_TRIGGERS, type NativeScript } from "./hooks/stand-ins.ts";
import { updateCaCertificates } from "./hooks/update-ca-certificates.ts";
import { regenerateCaBundle } from "./script-effects.ts";
import type { UnpackSummary } from "./unpack.ts";

/**
 * ca-certificates' scripts (a debconf conversation, the selection rewrite, update-ca-certificates)
 * and its `update-ca-certificates` trigger are redone natively from the files (script-effects.ts),
 * but not byte for byte as the scripts leave the image: debconf's database is not written. Good
 * enough where no runtime exists (the no-namespaces mode); where one does, they run for real.
 */
const APPROXIMATED_PACKAGE = "ca-certificates";
const APPROXIMATED_TRIGGER = "update-ca-certificates";

/** What configuring the unpacked packages (`dpkg --configure --pending`) would run. */
export interface ConfigureFacts {
  /** The packages just unpacked: the script calls dpkg would make, and their postinst's SHA-256. */
  unpacked: readonly {
    package: string;
    scripts: readonly string[];
    /** Triggers its unpack activated (UnpackSummary.triggers). */
    triggers: readonly string[];
    /** Triggers pending on it (it is interested in one another package activated). */
    triggersPending?: readonly string[];
    /** The SHA-256 of each call's script text (UnpackSummary.scriptSha256). */
    scriptSha256: readonly string[];
  }[];
  /** Every other package of the database that is not `installed`: its state and pending triggers. */
  unsettled: readonly { package: string; state: string; triggersPending: readonly string[] }[];
  /** Triggers processed natively for the image's interested package (reproducibleTriggers). */
  nativeTriggers: ReadonlyMap<string, { package: string; call: readonly string[] }>;
  scripts?: readonly NativeScript[];
}

/** The decision: what runs natively, what only approximately, and what has no equivalent. */
export interface ConfigureWork {
  /** Whole maintainer scripts with a native equivalent for this text, with their arguments. */
  scripts: { package: string; equivalent: NativeScript; args: string[] }[];
  /** Pending triggers processed natively: the trigger, its interested package, the native call. */
  triggers: { trigger: string; package: string; call: readonly string[] }[];
  /** Redone natively but not exactly (APPROXIMATED_PACKAGE): acceptable only without a runtime. */
  approximate: string[];
  /** What needs the image's runtime: `openssl (postinst)`, `libfoo (trigger /usr/share/man)`. */
  missing: string[];
}

/**
 * THE decision whether a configure needs the image's runtime (runc, and QEMU for a foreign
 * platform), for every mode: root and the user-namespace mode configure natively when `missing`
 * and `approximate` are empty, the no-namespaces mode when `missing` is, and refuses otherwise.
 * Covered natively: whole scripts of NATIVE_SCRIPTS whose text hashes to a known one (openssl's
 * postinst), and triggers of NATIVE_TRIGGERS pending on the package the equivalent stands for
 * (libc-bin's `ldconfig`, when its postinst is a known text). Any other script call (preinst,
 * prerm, postrm included), trigger, or package the image left half-configured is `missing`.
 */
export function decideConfigure(facts: ConfigureFacts): ConfigureWork {
  const table = facts.scripts ?? NATIVE_SCRIPTS;
  const work: ConfigureWork = { scripts: [], triggers: [], approximate: [], missing: [] };
  const approximating = facts.unpacked.some((u) => u.package === APPROXIMATED_PACKAGE);
  const activators = (trigger: string) =>
    facts.unpacked.filter((u) => u.triggers.includes(trigger)).map((u) => u.package);
  const needs = new Map<string, string[]>();
  const need = (who: string, what: string) => needs.set(who, [...(needs.get(who) ?? []), what]);
  for (const u of facts.unpacked) {
    if (u.package === APPROXIMATED_PACKAGE) {
      if (u.scripts.length) work.approximate.push(`${u.package}'s scripts`);
      continue;
    }
    for (const [i, call] of u.scripts.entries()) {
      const [, script, ...args] = call.split(" ");
      const text = u.scriptSha256[i];
      const equivalent = table.find(
        (s) => s.package === u.package && s.script === script && text !== undefined && s.texts.has(text),
      );
      if (equivalent) work.scripts.push({ package: u.package, equivalent, args });
      else need(u.package, script!);
    }
  }
  for (const p of facts.unsettled)
    if (p.state !== "triggers-pending" && p.state !== "triggers-awaited")
      need(p.package, `configure of a package the image left ${p.state}`);
  const pendingOn = [
    ...facts.unsettled,
    ...facts.unpacked.map((u) => ({ package: u.package, triggersPending: u.triggersPending ?? [] })),
  ];
  for (const p of pendingOn) {
    for (const trigger of p.triggersPending) {
      const native = facts.nativeTriggers.get(trigger);
      if (native && native.package === p.package) {
        if (!work.triggers.some((t) => t.trigger === trigger))
          work.triggers.push({ trigger, package: p.package, call: native.call });
      } else if (approximating && p.package === APPROXIMATED_PACKAGE && trigger === APPROXIMATED_TRIGGER)
        work.approximate.push(`${p.package}'s trigger ${trigger}`);
      else {
        const by = activators(trigger);
        for (const who of by.length ? by : [p.package]) need(who, `trigger ${trigger}`);
      }
    }
  }
  for (const [who, what] of needs) work.missing.push(`${who} (${[...new Set(what)].join(", ")})`);
  return work;
}

/**
 * The facts decideConfigure needs, read from the database right after the unpack: the unpacked
 * packages' postinst texts (as they now are in the info dir), every unsettled package, and which
 * of NATIVE_TRIGGERS this image's interested packages let run natively.
 */
export async function readConfigureFacts(
  root: string,
  db: DpkgDatabase,
  unpacked: readonly Pick<
    UnpackSummary,
    "package" | "architecture" | "scripts" | "scriptSha256" | "triggers"
  >[],
): Promise<ConfigureFacts> {
  const ours = new Set(unpacked.map((u) => `${u.package}:${u.architecture}`));
  const facts: ConfigureFacts = {
    unpacked: unpacked.map((u) => {
      const pkg = db.find(u.package, u.architecture);
      return {
        package: u.package,
        scripts: u.scripts,
        scriptSha256: u.scriptSha256,
        triggers: u.triggers,
        triggersPending: pkg ? words(fieldValue(pkg.fields, "Triggers-Pending")) : [],
      };
    }),
    unsettled: db.packages
      .filter((p) => !ours.has(`${p.name}:${p.architecture}`) && stateOf(p) !== "installed")
      .filter(
        (p) => p.status !== undefined && stateOf(p) !== "not-installed" && stateOf(p) !== "config-files",
      )
      .map((p) => ({
        package: p.name,
        state: stateOf(p),
        triggersPending: words(fieldValue(p.fields, "Triggers-Pending")),
      })),
    nativeTriggers: await reproducibleTriggers(root),
  };
  return facts;
}

/**
 * The triggers of NATIVE_TRIGGERS whose interested package's postinst in this image is one of the
 * texts the native equivalent stands for, with the call that processes them.
 */
async function reproducibleTriggers(
  root: string,
): Promise<Map<string, { package: string; call: readonly string[] }>> {
  const out = new Map<string, { package: string; call: readonly string[] }>();
  for (const [trigger, native] of NATIVE_TRIGGERS) {
    const text = await readFileInRoot(root, `/var/lib/dpkg/info/${native.package}.postinst`);
    if (text && native.postinst.has(sha256(text)))
      out.set(trigger, { package: native.package, call: native.call });
  }
  return out;
}

/** Why the native configure stopped: a hook that cannot reproduce this image's case exactly. */
export type NativeConfigureOutcome = { done: true; notes: string[] } | { done: false; unsupported: string };

/**
 * Configure natively what `work` covers, in dpkg's order (the packages' postinsts, then the
 * pending triggers), then write the database as `dpkg --configure --pending` leaves it
 * (markConfigured). When a hook cannot reproduce this image's case (`unsupported`), nothing of
 * the database is changed, so the caller's fallback (the image's dpkg in runc) configures from
 * the same unpacked state; what the equivalents did by then the real scripts redo identically.
 */
export async function configureNatively(
  root: string,
  db: DpkgDatabase,
  unpacked: readonly Pick<UnpackSummary, "package" | "architecture">[],
  work: ConfigureWork,
  progress: ProgressSink,
): Promise<NativeConfigureOutcome> {
  const notes: string[] = [];
  for (const s of work.scripts) {
    const started = performance.now();
    const r = await s.equivalent.run(root, s.args);
    if (!r.done)
      return { done: false, unsupported: `${s.package}'s ${s.equivalent.script}: ${r.unsupported}` };
    progress({
      type: "hook",
      package: s.package,
      hook: s.equivalent.script,
      calls: 1,
      ran: "native",
      detail: r.detail,
      elapsedMs: Math.round(performance.now() - started),
    });
  }
  if (work.approximate.length && unpacked.some((u) => u.package === APPROXIMATED_PACKAGE)) {
    if (await regenerateCaBundle(root)) {
      // With the selection rewritten, the links in /etc/ssl/certs follow it as the program makes
      // them. Without a selection file the program would start afresh, which the image never did.
      const links = (await readFileInRoot(root, "/etc/ca-certificates.conf"))
        ? await updateCaCertificates(root, ["--hooksdir", ""])
        : undefined;
      notes.push(
        `ca-certificates' update-ca-certificates (${links?.done ? "bundle and links" : "bundle"} rebuilt natively; debconf not run)`,
      );
    }
  }
  for (const t of work.triggers) {
    if (t.trigger !== "ldconfig")
      return { done: false, unsupported: `no native processing of trigger ${t.trigger}` };
    const started = performance.now();
    const r = await runLdconfig(root, t.call.slice(1));
    if (!r.done) return { done: false, unsupported: `${t.package}'s ldconfig trigger: ${r.unsupported}` };
    progress({
      type: "hook",
      package: t.package,
      hook: "ldconfig",
      calls: 1,
      ran: "native",
      detail: `${r.libraries} libraries cached, ${r.linksMade} links made, ${r.linksRemoved} removed`,
      elapsedMs: Math.round(performance.now() - started),
    });
  }
  markConfigured(
    db,
    unpacked,
    work.triggers.map((t) => t.trigger),
    work.approximate.length ? [APPROXIMATED_TRIGGER] : [],
  );
  await db.commit();
  return { done: true, notes };
}

/**
 * The status `dpkg --configure --pending` leaves once every script and trigger ran: the unpacked
 * packages `installed` (dpkg writes `Config-Version` only for states short of that, nor
 * `triggers-pending`), the processed triggers gone from `Triggers-Pending`, packages awaiting
 * them no longer awaiting, and a package with nothing pending or awaited `installed`.
 */
export function markConfigured(
  db: DpkgDatabase,
  unpacked: readonly Pick<UnpackSummary, "package" | "architecture">[],
  processed: readonly string[],
  alsoProcessed: readonly string[] = [],
): void {
  if (db.layout !== "classic") return;
  const ours = new Set(unpacked.map((u) => `${u.package}:${u.architecture}`));
  const done = new Set([...processed, ...alsoProcessed]);
  const stillPending = new Set<string>();
  const updates: { pkg: DatabasePackage; pending: string[] }[] = [];
  for (const pkg of db.packages) {
    const pending = words(fieldValue(pkg.fields, "Triggers-Pending")).filter((t) => !done.has(t));
    if (pending.length) stillPending.add(pkg.name);
    updates.push({ pkg, pending });
  }
  for (const { pkg, pending } of updates) {
    const state = stateOf(pkg);
    const isOurs = ours.has(`${pkg.name}:${pkg.architecture}`);
    if (!isOurs && state !== "triggers-pending" && state !== "triggers-awaited") continue;
    const awaited = words(fieldValue(pkg.fields, "Triggers-Awaited")).filter((p) => stillPending.has(p));
    const next = pending.length ? "triggers-pending" : awaited.length ? "triggers-awaited" : "installed";
    const awaitedBefore = words(fieldValue(pkg.fields, "Triggers-Awaited"));
    if (!isOurs && next === state && awaited.length === awaitedBefore.length) continue;
    const [want, eflag] = (pkg.status ?? "install ok").split(/\s+/);
    let fields = withField(pkg.fields, "Status", `${want} ${eflag} ${next}`);
    fields = withField(fields, "Triggers-Pending", pending.length ? pending.join(" ") : undefined);
    fields = withField(fields, "Triggers-Awaited", awaited.length ? awaited.join(" ") : undefined);
    // dpkg writes Config-Version for every state but installed, triggers-pending (and not-installed).
    fields = withField(
      fields,
      "Config-Version",
      next === "triggers-awaited" ? (isOurs ? pkg.version : fieldValue(fields, "Config-Version")) : undefined,
    );
    db.setPackage(orderStatusFields(fields));
  }
}

function stateOf(pkg: DatabasePackage): string {
  return pkg.status?.split(/\s+/)[2] ?? "installed";
}

function words(value: string | undefined): string[] {
  return (value ?? "").split(/\s+/).filter(Boolean);
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}
