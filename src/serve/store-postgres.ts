/**
 * The ServiceStore on PostgreSQL (`suture serve --database postgres://…`): the same state as the
 * embedded store, shared by every service node. The schema is created and migrated on open:
 * numbered migrations, applied in order inside one transaction under an advisory lock, so two
 * nodes starting at once neither race nor apply a step twice, and a database migrated by a newer
 * suture is refused rather than misread.
 */
import pg from "pg";
import { isSutureError, redact, SutureError } from "../errors/errors.ts";
import type { PatchRecord, Rule, ServiceStore } from "./store.ts";

/** Each entry moves the schema one version up; never edit a released one, append a new one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE suture_rules (
     id text PRIMARY KEY,
     rule jsonb NOT NULL,
     updated_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE suture_seen (
     key text PRIMARY KEY,
     digest text NOT NULL,
     updated_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE suture_results (
     seq bigserial PRIMARY KEY,
     job_id text NOT NULL,
     repository text NOT NULL,
     record jsonb NOT NULL
   );
   CREATE INDEX suture_results_by_image ON suture_results (repository, seq DESC);
   CREATE TABLE suture_vex (
     job_id text PRIMARY KEY,
     doc text NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now()
   );`,
];

/** The schema version this suture writes. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

/** An arbitrary constant: the advisory lock every suture node takes while it migrates. */
const MIGRATION_LOCK = 0x53757475;

/** The most results `forImage` returns (newest first). */
const IMAGE_HISTORY_MAX = 1000;

export interface PostgresStoreOptions {
  /** Connections in the pool (default 5). */
  maxConnections?: number;
}

/** Connect, create or migrate the schema, and return the store. */
export async function openPostgresStore(
  url: string,
  options: PostgresStoreOptions = {},
): Promise<ServiceStore> {
  const pool = new pg.Pool({ connectionString: url, max: options.maxConnections ?? 5 });
  // An idle client's error (the server restarted) must not crash the process; the next query reconnects.
  pool.on("error", () => {});
  try {
    await migrate(pool);
  } catch (e) {
    await pool.end().catch(() => {});
    if (isSutureError(e)) throw e;
    throw new SutureError(
      "NETWORK",
      `cannot use the Postgres database at ${redact(url)}: ${(e as Error).message}; check --database and that the server accepts connections`,
      { cause: e },
    );
  }
  return postgresStore(pool);
}

async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    await client.query(
      `CREATE TABLE IF NOT EXISTS suture_schema_migrations (
         version integer PRIMARY KEY,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const { rows } = await client.query<{ version: number | null }>(
      "SELECT max(version) AS version FROM suture_schema_migrations",
    );
    const current = rows[0]?.version ?? 0;
    if (current > MIGRATIONS.length) {
      throw new SutureError(
        "USAGE",
        `the Postgres database has suture schema version ${current}, newer than this suture's ${MIGRATIONS.length}: upgrade suture (or point --database at another database)`,
      );
    }
    for (let version = current + 1; version <= MIGRATIONS.length; version++) {
      await client.query(MIGRATIONS[version - 1]);
      await client.query("INSERT INTO suture_schema_migrations (version) VALUES ($1)", [version]);
    }
    await client.query("COMMIT");
  } catch (e) {
    await client.query("ROLLBACK").catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}

function postgresStore(pool: pg.Pool): ServiceStore {
  return {
    rules: {
      async list() {
        const { rows } = await pool.query<{ rule: Rule }>("SELECT rule FROM suture_rules ORDER BY id");
        return rows.map((r) => r.rule);
      },
      async get(id) {
        const { rows } = await pool.query<{ rule: Rule }>("SELECT rule FROM suture_rules WHERE id = $1", [
          id,
        ]);
        return rows[0]?.rule;
      },
      async put(rule) {
        await pool.query(
          `INSERT INTO suture_rules (id, rule) VALUES ($1, $2)
           ON CONFLICT (id) DO UPDATE SET rule = excluded.rule, updated_at = now()`,
          [rule.id, JSON.stringify(rule)],
        );
      },
      async delete(id) {
        const { rowCount } = await pool.query("DELETE FROM suture_rules WHERE id = $1", [id]);
        return (rowCount ?? 0) > 0;
      },
    },
    seen: {
      async get(key) {
        const { rows } = await pool.query<{ digest: string }>(
          "SELECT digest FROM suture_seen WHERE key = $1",
          [key],
        );
        return rows[0]?.digest;
      },
      async set(key, digest) {
        await pool.query(
          `INSERT INTO suture_seen (key, digest) VALUES ($1, $2)
           ON CONFLICT (key) DO UPDATE SET digest = excluded.digest, updated_at = now()`,
          [key, digest],
        );
      },
    },
    results: {
      // One row per run, as the embedded store: a job's failed attempts stay in the image's history.
      async add(record) {
        await pool.query("INSERT INTO suture_results (job_id, repository, record) VALUES ($1, $2, $3)", [
          record.jobId,
          record.repository,
          JSON.stringify(record),
        ]);
      },
      async forImage(repository) {
        const { rows } = await pool.query<{ record: PatchRecord }>(
          `SELECT record FROM suture_results WHERE repository = $1
           ORDER BY seq DESC LIMIT $2`,
          [repository, IMAGE_HISTORY_MAX],
        );
        return rows.map((r) => r.record);
      },
      async recent(limit) {
        const { rows } = await pool.query<{ record: PatchRecord }>(
          "SELECT record FROM suture_results ORDER BY seq DESC LIMIT $1",
          [Math.max(0, Math.floor(limit))],
        );
        return rows.map((r) => r.record);
      },
    },
    vex: {
      async put(jobId, doc) {
        await pool.query(
          `INSERT INTO suture_vex (job_id, doc) VALUES ($1, $2)
           ON CONFLICT (job_id) DO UPDATE SET doc = excluded.doc, created_at = now()`,
          [jobId, doc],
        );
      },
      async get(jobId) {
        const { rows } = await pool.query<{ doc: string }>("SELECT doc FROM suture_vex WHERE job_id = $1", [
          jobId,
        ]);
        return rows[0]?.doc;
      },
    },
    async close() {
      await pool.end();
    },
  };
}
