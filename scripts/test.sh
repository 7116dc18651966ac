#!/usr/bin/env bash
# The one test command (README, CI): installs what the tests need, type-checks, lints, and runs every
# unit and integration test with Node's test runner. Run as root on Debian 12 (the lab starts real
# registries, dockerd and runc containers).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x node_modules/.bin/node ]] || npm ci --no-audit --no-fund
if [[ $EUID -eq 0 ]]; then
  bash scripts/install-system-deps.sh
else
  echo "warning: not root: skipping system package installation; tests that need root skip and say so (npm run test:unit needs none)" >&2
fi
export PATH="$PWD/node_modules/.bin:$PATH"
echo "== typecheck"; tsc --noEmit -p .
echo "== lint"; biome check --diagnostic-level=error .
# The end-to-end tests run bin/suture as users do: from the CLI's bundle, built from these sources.
echo "== bundle"; node scripts/build-cli.ts
echo "== tests"
shopt -s globstar nullglob
files=(src/**/*.test.ts test/**/*.test.ts)
node --test --test-concurrency="${SUTURE_TEST_CONCURRENCY:-2}" --test-timeout=1200000 "${files[@]}"
