/**
 * The state of `suture serve` that survives a restart: rules, seen digests, patch results and
 * VEX documents. The embedded store (`sqlite-store.ts`, node:sqlite) and the Postgres store of the
 * scaled-out mode implement it. Everything stored is plain JSON-able data.
 */
import type { JobOutcome, PatchJobSpec } from "./queue.ts";

/** A watch rule, as written in the rules file or sent to the API (validated by `rules.ts`). */
export interface Rule {
  /** Unique, URL-safe: `[a-z0-9][a-z0-9._-]*`. */
  id: string;
  /** The source repository without a tag, e.g. `registry.example:5000/team/app`. */
  image: string;
  /** Which tags to watch: the strategies of `suture bulk` (copa's PatchConfig). */
  tags:
    | { strategy: "list"; list: string[] }
    | { strategy: "pattern"; pattern: string; maxTags?: number; exclude?: string[] }
    | { strategy: "latest"; exclude?: string[] };
  /** Where patched images go (copa's `target`): registry and tag template. */
  target?: { registry?: string; tag?: string };
  platforms?: string[];
  /** Seconds between registry polls (and new-fixes checks) of this rule. */
  intervalSeconds: number;
  /**
   * A scanner command that writes a report of the image to stdout (`{image}` is replaced by the
   * pinned source reference); without one the job updates every package (update-all).
   */
  scanner?: { command: string[]; format?: "trivy" | "grype" | "auto" };
}

/** One finished job's result, by image. */
export interface PatchRecord {
  jobId: string;
  ruleId: string;
  /** The source repository (`registry/repo`). */
  repository: string;
  /** The source tag and the pinned source (`…@sha256:…`). */
  tag: string;
  source: string;
  reason: PatchJobSpec["reason"];
  state: "succeeded" | "failed";
  outcome?: Omit<JobOutcome, "vex">;
  error?: { code: string; message: string };
  durationMs: number;
  /** ISO 8601. */
  finishedAt: string;
}

export interface ServiceStore {
  rules: {
    list(): Promise<Rule[]>;
    get(id: string): Promise<Rule | undefined>;
    put(rule: Rule): Promise<void>;
    delete(id: string): Promise<boolean>;
  };
  /** Last seen digest per (rule, repository, tag), for change detection: key `seenKey(...)`. */
  seen: { get(key: string): Promise<string | undefined>; set(key: string, digest: string): Promise<void> };
  results: {
    add(r: PatchRecord): Promise<void>;
    /** Newest first. */
    forImage(repository: string): Promise<PatchRecord[]>;
    /** Newest first. */
    recent(limit: number): Promise<PatchRecord[]>;
  };
  vex: { put(jobId: string, doc: string): Promise<void>; get(jobId: string): Promise<string | undefined> };
  close(): Promise<void>;
}

/** The seen-digest key of a rule's repository tag. */
export function seenKey(ruleId: string, repository: string, tag: string): string {
  return `${ruleId}\n${repository}\n${tag}`;
}
