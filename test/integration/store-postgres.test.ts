/**
 * The Postgres ServiceStore against a real PostgreSQL server: the same contract as the embedded
 * store, plus what only a shared database has — the schema created on first open, reopening (or
 * several nodes opening at once) migrating nothing twice, state surviving a restart, a database
 * from a newer suture refused, and an unreachable server a one-line error without its password.
 */
import assert from "node:assert/strict";
import pg from "pg";
import { isSutureError } from "../../src/errors/errors.ts";
import { openPostgresStore, POSTGRES_SCHEMA_VERSION } from "../../src/serve/store-postgres.ts";
import { type LabPostgres, startPostgres } from "../lab/postgres.ts";
import { freePort } from "../lab/redis.ts";
import { requiring } from "../lab/requirements.ts";
import { serviceStoreContract } from "../lab/service-store-contract.ts";

const { after, before, describe, test } = await requiring("loopback", "postgres");

let server: LabPostgres;
let databases = 0;
const freshDatabase = () => server.createDatabase(`store_${process.pid}_${++databases}`);

before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

describe("Postgres service store: the store contract", () => {
  serviceStoreContract(test, async () => openPostgresStore(await freshDatabase()));
});

describe("Postgres service store: schema and connection", () => {
  test("schema created on first open; reopening and concurrent opens migrate nothing twice; state survives", async () => {
    const url = await freshDatabase();
    const stores = await Promise.all([
      openPostgresStore(url),
      openPostgresStore(url),
      openPostgresStore(url),
    ]);
    await stores[0].rules.put({
      id: "web",
      image: "127.0.0.1:5000/app",
      tags: { strategy: "latest" },
      intervalSeconds: 60,
    });
    await stores[1].vex.put("j1", "{}");
    await Promise.all(stores.map((s) => s.close()));

    const reopened = await openPostgresStore(url);
    assert.equal((await reopened.rules.get("web"))?.image, "127.0.0.1:5000/app", "a rule survives a restart");
    assert.equal(await reopened.vex.get("j1"), "{}");
    await reopened.close();

    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query("SELECT version FROM suture_schema_migrations ORDER BY version");
      assert.deepEqual(
        rows.map((r) => r.version),
        Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1),
      );
    } finally {
      await client.end();
    }
  });

  test("a database migrated by a newer suture is refused, not misread", async () => {
    const url = await freshDatabase();
    await (await openPostgresStore(url)).close();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query("INSERT INTO suture_schema_migrations (version) VALUES ($1)", [
      POSTGRES_SCHEMA_VERSION + 1,
    ]);
    await client.end();
    await assert.rejects(openPostgresStore(url), (e: unknown) => {
      assert.ok(isSutureError(e, "USAGE"));
      assert.match(e.message, /newer than this suture's/);
      return true;
    });
  });

  test("an unreachable server: a one-line NETWORK error naming --database, without the password", async () => {
    const port = await freePort();
    await assert.rejects(
      openPostgresStore(`postgres://suture:hunter2secret@127.0.0.1:${port}/suture`),
      (e: unknown) => {
        assert.ok(isSutureError(e, "NETWORK"));
        assert.ok(!e.message.includes("hunter2secret"), e.message);
        assert.ok(!e.message.includes("\n"));
        assert.match(e.message, /--database/);
        return true;
      },
    );
  });
});
