/**
 * The embedded store (node:sqlite) against the same store contract as the Postgres store
 * (test/lab/service-store-contract.ts), so both stores keep one meaning.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { openSqliteStore } from "../../src/serve/sqlite-store.ts";
import { serviceStoreContract } from "../lab/service-store-contract.ts";

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe("embedded (node:sqlite) service store: the store contract", () => {
  serviceStoreContract(test, async () => {
    const dir = await mkdtemp(join(tmpdir(), "suture-sqlite-store-"));
    dirs.push(dir);
    return openSqliteStore(join(dir, "state.db"));
  });
});
