import { createHash, type Hash } from "node:crypto";
import { Worker } from "node:worker_threads";

/**
 * SHA-256 of a long stream, computed on a worker thread.
 *
 * Why: a cold patch decompresses its layers on libuv's threadpool while the main thread parses the
 * tar, creates the files and hashed every decompressed byte for the diff_id check. On a 2-core
 * machine the main thread was the busier one (hashing a big image's 1.6 GiB of layers was its
 * largest single item) while the second core waited on it. Here the main thread only copies each
 * piece into a 1 MiB staging buffer (a memcpy, ~1/10 of the hash's cost) and hands it over; the
 * worker hashes it and hands the buffer back for reuse (no fresh pages per MiB).
 *
 * The digest is the same SHA-256 of the same bytes, in order: only the thread computing it moved.
 * One worker serves every stream of the process (one more thread, a few MB); it keeps the process
 * alive only while a stream is open. When no worker can be started, hashing stays in this thread.
 */
export class BackgroundSha256 {
  readonly #id = nextId++;
  /** Staging buffers sent and not yet handed back. */
  #inFlight = 0;
  #stage: Uint8Array | undefined;
  #fill = 0;
  #waiting: { resolve: (b: ArrayBuffer) => void; reject: (e: Error) => void } | undefined;
  #result: { resolve: (hex: string) => void; reject: (e: Error) => void } | undefined;
  #error: Error | undefined;
  #closed = false;
  /** Hashing in this thread: no worker could be started. */
  readonly #local: Hash | undefined;

  constructor() {
    const w = hashWorker();
    if (w === undefined) {
      this.#local = createHash("sha256");
      return;
    }
    clearTimeout(idleTimer);
    sessions.set(this.#id, this);
  }

  /** Add `chunk`; the promise settles once it is copied (it waits when the worker is behind). */
  async update(chunk: Uint8Array): Promise<void> {
    if (this.#local) {
      this.#local.update(chunk);
      return;
    }
    let off = 0;
    while (off < chunk.length) {
      if (this.#error) throw this.#error;
      if (this.#stage === undefined) {
        this.#stage = new Uint8Array(await this.#buffer());
        this.#fill = 0;
      }
      const n = Math.min(chunk.length - off, STAGE_BYTES - this.#fill);
      this.#stage.set(chunk.subarray(off, off + n), this.#fill);
      this.#fill += n;
      off += n;
      if (this.#fill === STAGE_BYTES) this.#send();
    }
  }

  /** The hex digest of everything added; the object is done after it. */
  async digest(): Promise<string> {
    if (this.#local) return this.#local.digest("hex");
    if (this.#error) throw this.#error;
    if (this.#fill > 0) this.#send();
    const done = new Promise<string>((resolve, reject) => {
      this.#result = { resolve, reject };
    });
    waitStarted();
    worker!.postMessage({ id: this.#id, op: "digest" });
    return done;
  }

  /** Forget the stream (after digest, or abandoned part-way); idempotent. */
  dispose(): void {
    if (this.#local || this.#closed) return;
    this.#closed = true;
    // Whoever still waits (a stream destroyed part-way) is let go, and stops holding the process.
    const gone = new Error("the stream was disposed of before its digest");
    this.fail(gone);
    if (this.#stage) spare.push(this.#stage.buffer as ArrayBuffer);
    this.#stage = undefined;
    if (sessions.delete(this.#id)) {
      worker?.postMessage({ id: this.#id, op: "drop" });
      if (sessions.size === 0) idleSoon();
    }
  }

  #buffer(): ArrayBuffer | Promise<ArrayBuffer> {
    if (this.#inFlight < MAX_IN_FLIGHT) return spare.pop() ?? new ArrayBuffer(STAGE_BYTES);
    waitStarted();
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
  }

  #send(): void {
    const buf = this.#stage!.buffer as ArrayBuffer;
    this.#inFlight++;
    worker!.postMessage({ id: this.#id, op: "update", buf, len: this.#fill }, [buf]);
    this.#stage = undefined;
    this.#fill = 0;
  }

  /** A message from the worker about this stream. */
  receive(m: WorkerReply): void {
    if (m.op === "ack") {
      this.#inFlight--;
      const waiting = this.#waiting;
      if (waiting) {
        this.#waiting = undefined;
        waitEnded();
        waiting.resolve(m.buf);
      } else spare.push(m.buf);
      return;
    }
    const result = this.#result;
    this.#result = undefined;
    if (result) waitEnded();
    this.dispose();
    result?.resolve(m.hex);
  }

  /** The worker died: every waiter fails with its error. */
  fail(e: Error): void {
    this.#error = e;
    if (this.#waiting) waitEnded();
    if (this.#result) waitEnded();
    this.#waiting?.reject(e);
    this.#result?.reject(e);
    this.#waiting = undefined;
    this.#result = undefined;
    this.#closed = true;
  }
}

type WorkerReply = { id: number; op: "ack"; buf: ArrayBuffer } | { id: number; op: "digest"; hex: string };

/** Staging buffer size: big enough that messages are few (~160 per 164 MB layer), small enough to keep. */
const STAGE_BYTES = 1024 * 1024;
/** Buffers a stream may have at the worker before `update` waits: bounds memory when the worker is behind. */
const MAX_IN_FLIGHT = 3;
/**
 * With no stream open for this long, the worker ends and the spare buffers go: the memory peak of
 * a patch comes later (the repositories' indexes), and a few MB held there would count.
 */
const IDLE_MS = 300;

let nextId = 1;
let worker: Worker | undefined;
/** Set once starting a worker failed: hash in this thread from then on. */
let unavailable = false;
const sessions = new Map<number, BackgroundSha256>();
/** Staging buffers handed back and not in use (reused across streams). */
const spare: ArrayBuffer[] = [];

// Plain JS (an eval'd worker): no file to find next to a bundle (the GitHub Action's is one file);
// getBuiltinModule works whether the worker is taken for CommonJS or, as with --input-type=module, ESM.
const WORKER_SOURCE = `
const { parentPort } = process.getBuiltinModule("node:worker_threads");
const { createHash } = process.getBuiltinModule("node:crypto");
const hashes = new Map();
parentPort.on("message", (m) => {
  if (m.op === "update") {
    let h = hashes.get(m.id);
    if (h === undefined) hashes.set(m.id, (h = createHash("sha256")));
    h.update(new Uint8Array(m.buf, 0, m.len));
    parentPort.postMessage({ id: m.id, op: "ack", buf: m.buf }, [m.buf]);
  } else if (m.op === "digest") {
    const h = hashes.get(m.id) ?? createHash("sha256");
    hashes.delete(m.id);
    parentPort.postMessage({ id: m.id, op: "digest", hex: h.digest("hex") });
  } else if (m.op === "drop") {
    hashes.delete(m.id);
  }
});
`;

/**
 * Awaits of the worker's answers in progress. The worker keeps the process alive only while
 * someone waits for it: a stream abandoned part-way (never destroyed) must not hold the process
 * open at exit.
 */
let waits = 0;
let idleTimer: NodeJS.Timeout | undefined;

function idleSoon(): void {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    if (sessions.size > 0) return;
    spare.length = 0;
    const w = worker;
    worker = undefined;
    void w?.terminate();
  }, IDLE_MS);
  idleTimer.unref();
}

function waitStarted(): void {
  if (waits++ === 0) worker?.ref();
}
function waitEnded(): void {
  if (--waits === 0) worker?.unref();
}

function hashWorker(): Worker | undefined {
  if (worker || unavailable) return worker;
  let w: Worker;
  try {
    w = new Worker(WORKER_SOURCE, { eval: true });
  } catch {
    unavailable = true;
    return undefined;
  }
  w.unref();
  w.on("message", (m: WorkerReply) => sessions.get(m.id)?.receive(m));
  const down = (e: Error) => {
    if (worker !== w) return;
    worker = undefined;
    const open = [...sessions.values()];
    sessions.clear();
    for (const s of open) s.fail(e);
  };
  w.on("error", down);
  w.on("exit", (code) => down(new Error(`the hashing worker exited (code ${code})`)));
  worker = w;
  return w;
}
