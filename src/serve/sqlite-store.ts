/**
 * The embedded store of `suture serve`: one SQLite file through Node's own `node:sqlite` (nothing
 * to install). Rules and results are stored as JSON documents (the store never interprets them);
 * the columns beside them are only what lookups need.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { asSutureError } from "../errors/errors.ts";
import type { PatchRecord, Rule, ServiceStore } from "./store.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS rules (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  repository TEXT NOT NULL,
  doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_repository ON results (repository, seq);
CREATE TABLE IF NOT EXISTS vex (job_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
`;

/** Open (creating if needed) the store at `file`; `:memory:` for a store that ends with the process. */
export function openSqliteStore(file: string): ServiceStore {
  let db: DatabaseSync;
  try {
    if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
    db = new DatabaseSync(file);
    // WAL: the API reads while a job's result is written.
    db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;");
    db.exec(SCHEMA);
  } catch (e) {
    throw asSutureError(e, "IO", `cannot open the state database ${file}: check --state-dir`);
  }
  const q = {
    ruleList: db.prepare("SELECT doc FROM rules ORDER BY id"),
    ruleGet: db.prepare("SELECT doc FROM rules WHERE id = ?"),
    rulePut: db.prepare(
      "INSERT INTO rules (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
    ),
    ruleDelete: db.prepare("DELETE FROM rules WHERE id = ?"),
    seenGet: db.prepare("SELECT digest FROM seen WHERE key = ?"),
    seenSet: db.prepare(
      "INSERT INTO seen (key, digest) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET digest = excluded.digest",
    ),
    resultAdd: db.prepare("INSERT INTO results (job_id, repository, doc) VALUES (?, ?, ?)"),
    resultsFor: db.prepare("SELECT doc FROM results WHERE repository = ? ORDER BY seq DESC"),
    resultsRecent: db.prepare("SELECT doc FROM results ORDER BY seq DESC LIMIT ?"),
    vexPut: db.prepare(
      "INSERT INTO vex (job_id, doc) VALUES (?, ?) ON CONFLICT (job_id) DO UPDATE SET doc = excluded.doc",
    ),
    vexGet: db.prepare("SELECT doc FROM vex WHERE job_id = ?"),
  };
  const docs = <T>(rows: unknown[]): T[] => rows.map((r) => JSON.parse((r as { doc: string }).doc) as T);
  const doc = <T>(row: unknown): T | undefined =>
    row ? (JSON.parse((row as { doc: string }).doc) as T) : undefined;
  return {
    rules: {
      list: async () => docs<Rule>(q.ruleList.all()),
      get: async (id) => doc<Rule>(q.ruleGet.get(id)),
      put: async (rule) => {
        q.rulePut.run(rule.id, JSON.stringify(rule));
      },
      delete: async (id) => Number(q.ruleDelete.run(id).changes) > 0,
    },
    seen: {
      get: async (key) => (q.seenGet.get(key) as { digest: string } | undefined)?.digest,
      set: async (key, digest) => {
        q.seenSet.run(key, digest);
      },
    },
    results: {
      add: async (r: PatchRecord) => {
        q.resultAdd.run(r.jobId, r.repository, JSON.stringify(r));
      },
      forImage: async (repository) => docs<PatchRecord>(q.resultsFor.all(repository)),
      recent: async (limit) => docs<PatchRecord>(q.resultsRecent.all(limit)),
    },
    vex: {
      put: async (jobId, text) => {
        q.vexPut.run(jobId, text);
      },
      get: async (jobId) => (q.vexGet.get(jobId) as { doc: string } | undefined)?.doc,
    },
    close: async () => {
      if (db.isOpen) db.close();
    },
  };
}
