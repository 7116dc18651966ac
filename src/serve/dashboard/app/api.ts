/// <reference lib="dom" />
/**
 * The dashboard's one way to the API: every call carries the bearer token from sessionStorage
 * (never a URL, a cookie or the page), a 401 signs the user out, and errors come back as the
 * API's `{code, message}`. Live job progress is read from the SSE route with fetch streaming,
 * because EventSource cannot send an Authorization header.
 */
import type { JobEvent, JobRecord } from "../../queue.ts";
import type { PatchRecord, Rule } from "../../store.ts";

export type { JobEvent, JobRecord, PatchRecord, Rule };

export interface ImageSummary {
  repository: string;
  last?: PatchRecord;
  patched: number;
  failed: number;
  cvesFixed: number;
}

const TOKEN_KEY = "suture.token";
/** The API's root, beside the dashboard's own path (`/dashboard/` -> `/api/v1/`). */
const API = new URL("../api/v1/", document.baseURI);

export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const signedOut = new Set<() => void>();

export function currentToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const listener of signedOut) listener();
}

export function onSignOut(listener: () => void): () => void {
  signedOut.add(listener);
  return () => signedOut.delete(listener);
}

async function errorOf(res: Response): Promise<ApiError> {
  try {
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    return new ApiError(res.status, body.error?.code ?? "HTTP", body.error?.message ?? res.statusText);
  } catch {
    return new ApiError(res.status, "HTTP", `the service answered ${res.status} ${res.statusText}`);
  }
}

async function call(path: string, init: RequestInit = {}, token = currentToken()): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.body !== undefined) headers.set("Content-Type", "application/json");
  const res = await fetch(new URL(path, API), { ...init, headers, cache: "no-store" });
  if (res.status === 401 && token === currentToken()) signOut();
  if (!res.ok) throw await errorOf(res);
  return res;
}

/**
 * Check a token against the API before keeping it: only a token the service accepts is stored.
 * Throws the API's refusal (UNAUTHORIZED) otherwise.
 */
export async function signIn(token: string): Promise<void> {
  await call("rules", {}, token);
  sessionStorage.setItem(TOKEN_KEY, token);
}

export async function getJson<T>(path: string): Promise<T> {
  return (await (await call(path)).json()) as T;
}

export async function send<T>(method: string, path: string, body?: unknown): Promise<T | undefined> {
  const res = await call(path, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  return res.status === 204 ? undefined : ((await res.json()) as T);
}

/** `a/b` as one path segment of the API. */
export const segment = (s: string) => encodeURIComponent(s);

/**
 * Follow a job's server-sent events until the job ends, the stream closes or `signal` aborts.
 * Returns when the stream is over.
 */
export async function followJob(
  id: string,
  onEvent: (e: JobEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const res = await call(`jobs/${segment(id)}/events`, { signal, headers: { Accept: "text/event-stream" } });
  if (!res.body) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) onEvent(JSON.parse(data) as JobEvent);
        end = buffer.indexOf("\n\n");
      }
    }
  } catch (e) {
    if (!signal.aborted) throw e;
  } finally {
    reader.releaseLock();
  }
}

/** Fetch a job's OpenVEX document and hand it to the browser as a file download. */
export async function downloadVex(jobId: string): Promise<void> {
  const res = await call(`jobs/${segment(jobId)}/vex`);
  const url = URL.createObjectURL(new Blob([await res.arrayBuffer()], { type: "application/json" }));
  try {
    const a = document.createElement("a");
    a.href = url;
    a.download = `${jobId}.openvex.json`;
    document.body.append(a);
    a.click();
    a.remove();
  } finally {
    // The download has taken the bytes by the next task.
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
