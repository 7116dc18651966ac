/**
 * What turns registry changes into jobs: each rule's tags polled on its interval (tag list and a
 * manifest HEAD per tag; a digest the store has already seen for that tag is no change), the
 * registry's push notifications (`POST /hooks/registry`) at once, and on a slower schedule a
 * dry run over each patched image to notice fixes that appeared since it was patched.
 */

import { z } from "zod";
import type { BulkImageSpec, TagStrategy } from "../bulk/config.ts";
import { discoverTags, mapLimited, selectTags } from "../bulk/discover.ts";
import { formatPlatform } from "../oci/platform.ts";
import { type PatchOptions, patchImage } from "../patch/patch.ts";
import { formatReference } from "../ref/reference.ts";
import type { TransportOptions } from "../transports/index.ts";
import { resolveManifest } from "../transports/registry/registry.ts";
import type { JobQueue, PatchJobSpec } from "./queue.ts";
import { ruleSpec } from "./rules.ts";
import { type PatchRecord, type Rule, type ServiceStore, seenKey } from "./store.ts";

export type WatchEvent =
  | { type: "poll"; ruleId: string; tags: number; queued: number }
  | {
      type: "queued";
      ruleId: string;
      jobId: string;
      source: string;
      reason: PatchJobSpec["reason"];
      duplicate: boolean;
    }
  | { type: "warning"; ruleId?: string; message: string }
  /** One new-fixes check: how many patched images it dry-ran and how many got a job. */
  | { type: "fixes"; checked: number; queued: number }
  /** A push notification of a tag, and what came of it for one rule (or for none). */
  | {
      type: "hook";
      ruleId?: string;
      reference: string;
      outcome: "queued" | "seen" | "polling" | "not-watched";
    };

export interface WatcherOptions {
  store: ServiceStore;
  queue: JobQueue;
  transport?: TransportOptions;
  /** Seconds between new-fixes checks of patched images (0: never). */
  fixesIntervalSeconds?: number;
  cacheDir?: string;
  /**
   * The jobs' patch options that decide which repositories a patch reads: the new-fixes dry run
   * must see the fixes a job would install, through the same mirrors and keys.
   */
  patch?: Pick<PatchOptions, "mirrors" | "keyringFiles" | "allowInsecureRepositories" | "engine">;
  onEvent?: (e: WatchEvent) => void;
}

/** Manifest HEADs a poll makes at once. */
const HEAD_CONCURRENCY = 8;

export class Watcher {
  readonly #o: WatcherOptions;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #polling = new Map<string, Promise<void>>();
  #fixesTimer?: NodeJS.Timeout;
  #stopped = false;

  constructor(options: WatcherOptions) {
    this.#o = options;
  }

  #emit(e: WatchEvent): void {
    this.#o.onEvent?.(e);
  }

  /** Poll every rule now and then on its interval; rules added later are picked up by `reschedule`. */
  async start(): Promise<void> {
    for (const rule of await this.#o.store.rules.list()) this.schedule(rule);
    const fixes = this.#o.fixesIntervalSeconds ?? 0;
    if (fixes > 0) {
      const tick = () => {
        this.#fixesTimer = setTimeout(async () => {
          await this.checkNewFixes().catch((e) =>
            this.#emit({ type: "warning", message: `new-fixes check: ${(e as Error).message}` }),
          );
          if (!this.#stopped) tick();
        }, fixes * 1000);
        this.#fixesTimer.unref();
      };
      tick();
    }
  }

  /** (Re)start a rule's polling: now, then every interval. */
  schedule(rule: Rule): void {
    this.unschedule(rule.id);
    if (this.#stopped) return;
    const loop = async () => {
      await this.poll(rule.id);
      if (this.#stopped || !this.#timers.has(rule.id)) return;
      const t = setTimeout(loop, rule.intervalSeconds * 1000);
      this.#timers.set(rule.id, t);
    };
    this.#timers.set(rule.id, setTimeout(loop, 0));
  }

  unschedule(ruleId: string): void {
    clearTimeout(this.#timers.get(ruleId));
    this.#timers.delete(ruleId);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const id of [...this.#timers.keys()]) this.unschedule(id);
    clearTimeout(this.#fixesTimer);
    await Promise.allSettled([...this.#polling.values()]);
  }

  /** Poll one rule (one poll of a rule at a time: a hook and the timer share it). */
  poll(ruleId: string): Promise<void> {
    const running = this.#polling.get(ruleId);
    if (running) return running;
    const p = this.#pollRule(ruleId)
      .catch((e) => this.#emit({ type: "warning", ruleId, message: `poll: ${(e as Error).message}` }))
      .finally(() => this.#polling.delete(ruleId));
    this.#polling.set(ruleId, p);
    return p;
  }

  async #pollRule(ruleId: string): Promise<void> {
    const rule = await this.#o.store.rules.get(ruleId);
    if (!rule) return;
    const spec = ruleSpec(rule);
    const access = { ...this.#o.transport };
    const found = await discoverTags(spec.repository, spec.tags, access);
    for (const w of found.warnings) this.#emit({ type: "warning", ruleId, message: w });
    const digests = await mapLimited(found.tags, HEAD_CONCURRENCY, async (tag) => {
      const head = await resolveManifest({ ...spec.repository, tag }, access);
      return head?.digest;
    });
    let queued = 0;
    for (const [i, tag] of found.tags.entries()) {
      const digest = digests[i];
      if (digest && (await this.#consider(rule, spec, tag, digest))) queued++;
    }
    this.#emit({ type: "poll", ruleId, tags: found.tags.length, queued });
  }

  /** A tag at a digest: a job when the digest is new for this rule's tag. True if one was queued. */
  async #consider(
    rule: Rule,
    spec: BulkImageSpec,
    tag: string,
    digest: string,
    hook = false,
  ): Promise<boolean> {
    const repository = `${spec.repository.registry}/${spec.repository.repository}`;
    const seen = await this.#o.store.seen.get(seenKey(rule.id, repository, tag));
    if (seen === digest) return false;
    const { job, duplicate } = await this.#o.queue.enqueue({
      ruleId: rule.id,
      source: formatReference({ ...spec.repository, tag, digest }),
      target: formatReference({ ...spec.targetRepository, tag: spec.tagTemplate.render(tag) }),
      ...(spec.platforms ? { platforms: spec.platforms.map(formatPlatform) } : {}),
      reason: hook ? "hook" : seen ? "moved-tag" : "new-tag",
    });
    this.#emit({
      type: "queued",
      ruleId: rule.id,
      jobId: job.id,
      source: job.spec.source,
      reason: job.spec.reason,
      duplicate,
    });
    return !duplicate;
  }

  /**
   * A registry's notification envelope: each manifest push by tag that a rule watches becomes a
   * job at once (strategies that depend on the other tags, `latest` and `maxTags`, poll the rule
   * instead). Returns how many events it acted on.
   */
  async notify(envelope: RegistryEnvelope): Promise<{ accepted: number }> {
    let accepted = 0;
    const rules = await this.#o.store.rules.list();
    for (const event of envelope.events) {
      if (event.action !== "push" || !event.target?.tag || !event.target.repository || !event.target.digest)
        continue;
      const { repository, tag, digest } = event.target;
      const host = registryHostOf(event);
      const reference = `${host ?? "?"}/${repository}:${tag}@${digest}`;
      let watched = false;
      for (const rule of rules) {
        const spec = ruleSpec(rule);
        if (spec.repository.repository !== repository) continue;
        if (host && !sameRegistry(host, spec.repository.registry)) continue;
        if (needsWholeList(spec.tags)) {
          watched = true;
          accepted++;
          this.#emit({ type: "hook", ruleId: rule.id, reference, outcome: "polling" });
          void this.poll(rule.id);
        } else if (tagSelected(spec.tags, tag)) {
          watched = true;
          accepted++;
          const queued = await this.#consider(rule, spec, tag, digest, true);
          this.#emit({ type: "hook", ruleId: rule.id, reference, outcome: queued ? "queued" : "seen" });
        }
      }
      if (!watched) this.#emit({ type: "hook", reference, outcome: "not-watched" });
    }
    return { accepted };
  }

  /**
   * New fixes for images already patched: a dry run of each rule's last patched source; when its
   * packages would now go to versions the last patch did not reach, the source is patched again.
   * One image's failed dry run is a warning; the others are still checked.
   */
  async checkNewFixes(): Promise<{ checked: number; queued: number }> {
    const latest = await this.#latestPatched();
    let checked = 0;
    let queued = 0;
    for (const [key, r] of latest) {
      if (this.#stopped) break;
      const rule = await this.#o.store.rules.get(r.ruleId);
      if (!rule || rule.scanner) continue; // a scanner's report decides, not update-all: its next poll does
      const spec = ruleSpec(rule);
      const target = formatReference({ ...spec.targetRepository, tag: spec.tagTemplate.render(r.tag) });
      let fresh: boolean;
      try {
        checked++;
        const dry = await patchImage({
          ...this.#o.patch,
          image: `docker://${r.source}`,
          tag: target,
          push: true,
          dryRun: true,
          platforms: spec.platforms,
          cacheDir: this.#o.cacheDir,
          transport: this.#o.transport,
        });
        const reached = new Set((r.outcome?.changed ?? []).map((c) => `${c.name}\n${c.to}`));
        // A dry run plans (`planned`); it changes nothing (`changed` stays empty).
        fresh = dry.platforms.some((p) => (p.planned ?? []).some((c) => !reached.has(`${c.name}\n${c.to}`)));
      } catch (e) {
        this.#emit({
          type: "warning",
          ruleId: rule.id,
          message: `new-fixes check of ${r.source}: ${(e as Error).message}`,
        });
        continue;
      }
      // A job of this tag that ended during the dry run already patched with what it saw.
      if (!fresh || (await this.#latestPatched()).get(key)?.jobId !== r.jobId) continue;
      const { job, duplicate } = await this.#o.queue.enqueue({
        ruleId: rule.id,
        source: r.source,
        target,
        ...(spec.platforms ? { platforms: spec.platforms.map(formatPlatform) } : {}),
        reason: "new-fixes",
      });
      if (!duplicate) queued++;
      this.#emit({
        type: "queued",
        ruleId: rule.id,
        jobId: job.id,
        source: r.source,
        reason: "new-fixes",
        duplicate,
      });
    }
    this.#emit({ type: "fixes", checked, queued });
    return { checked, queued };
  }

  /**
   * Each rule's tag's newest success, when it patched (up to date: nothing of ours to improve on;
   * a failure says nothing about what the target holds).
   */
  async #latestPatched(): Promise<Map<string, PatchRecord>> {
    const newest = new Map<string, PatchRecord>();
    for (const r of await this.#o.store.results.recent(1000)) {
      const key = `${r.ruleId}\n${r.repository}\n${r.tag}`;
      if (r.state === "succeeded" && !newest.has(key)) newest.set(key, r);
    }
    const patched = new Map<string, PatchRecord>();
    for (const [key, r] of newest) if (r.outcome?.status === "patched") patched.set(key, r);
    return patched;
  }
}

function needsWholeList(tags: TagStrategy): boolean {
  return tags.strategy === "latest" || (tags.strategy === "pattern" && tags.maxTags !== undefined);
}

function tagSelected(tags: TagStrategy, tag: string): boolean {
  if (tags.strategy === "list") return tags.list.includes(tag);
  if (tags.strategy === "latest") return false;
  return selectTags(tags, [tag]).tags.includes(tag);
}

/** The Docker distribution notification envelope (`application/vnd.docker.distribution.events.v1+json`), the fields used. */
export const RegistryEnvelope = z.object({
  events: z
    .array(
      z.object({
        action: z.string().optional(),
        target: z
          .object({
            mediaType: z.string().optional(),
            digest: z
              .string()
              .regex(/^sha256:[0-9a-f]{64}$/)
              .optional(),
            repository: z.string().max(256).optional(),
            tag: z
              .string()
              .regex(/^[\w][\w.-]{0,127}$/)
              .optional(),
            url: z.string().max(2048).optional(),
          })
          .optional(),
        request: z.object({ host: z.string().max(256).optional() }).optional(),
      }),
    )
    .max(1000),
});
export type RegistryEnvelope = z.infer<typeof RegistryEnvelope>;

/** Which registry sent the event: the target URL's host, else the request's. */
function registryHostOf(event: RegistryEnvelope["events"][number]): string | undefined {
  try {
    if (event.target?.url) return new URL(event.target.url).host;
  } catch {
    // no usable URL: fall back to the request's host
  }
  return event.request?.host;
}

function sameRegistry(a: string, b: string): boolean {
  const norm = (h: string) => h.toLowerCase().replace(/^(localhost|127\.0\.0\.1)(?=:|$)/, "127.0.0.1");
  return norm(a) === norm(b);
}
