/// <reference lib="dom" />
/**
 * What the views share: the hash router, a polling data hook, a job state badge and how a job's
 * progress event reads as one log line. Everything untrusted is passed to htm as a value, which
 * preact renders as text, never as HTML.
 */
import { html } from "htm/preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import type { JobEvent } from "./api.ts";

/** The current hash route, split into segments (`#/image/<repo>` -> ["image", "<repo>"]). */
export function useRoute(): string[] {
  const read = () =>
    location.hash
      .replace(/^#\/?/, "")
      .split("/")
      .filter(Boolean)
      .map((s) => decodeURIComponent(s));
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export const href = (...segments: string[]) => `#/${segments.map(encodeURIComponent).join("/")}`;

export interface Loaded<T> {
  data?: T;
  error?: string;
  reload: () => void;
}

/** Load `fetcher` now, again on `reload()` and every `everyMs` (0: once). */
export function useData<T>(fetcher: () => Promise<T>, deps: unknown[], everyMs = 0): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: string }>({});
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  // The caller names what the fetcher depends on (deps).
  useEffect(() => {
    let live = true;
    const load = () =>
      fetcher().then(
        (data) => live && setState({ data }),
        (e: Error) => live && setState((s) => ({ ...s, error: e.message })),
      );
    void load();
    const timer = everyMs > 0 ? setInterval(load, everyMs) : undefined;
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [...deps, tick]);
  return { ...state, reload };
}

export function StateBadge({ state }: { state: string }) {
  return html`<span class=${`state state-${state}`}>${state}</span>`;
}

export function ErrorText({ error }: { error?: string }) {
  return error ? html`<p role="alert">${error}</p>` : null;
}

export function when(iso?: string): string {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** One progress event as the log line a person reads. */
export function eventLine(e: JobEvent): string {
  const on = "platform" in e && e.platform ? `[${e.platform}] ` : "";
  switch (e.type) {
    case "job-state":
      return `job ${e.state}`;
    case "step":
      return `${on}${e.message}`;
    case "step-done":
      return `${on}${e.step} done in ${(e.elapsedMs / 1000).toFixed(1)} s${e.message ? `: ${e.message}` : ""}`;
    case "blob":
      return `${on}${e.action} ${e.digest.slice(0, 19)} (${e.total} bytes)`;
    case "warning":
      return `${on}warning: ${e.message}`;
    case "info":
      return `${on}${e.message}`;
    case "hook":
      return `${on}${e.package}: ${e.hook} ${e.ran === "native" ? "done natively" : "ran"} (${e.detail})`;
    case "package":
      return `${on}${e.status} ${e.name}${e.from ? ` ${e.from}` : ""} → ${e.to}${e.detail ? ` (${e.detail})` : ""}`;
    case "command-output":
      return `${on}${e.stream}: ${e.line}`;
  }
}
