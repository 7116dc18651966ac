#!/usr/bin/env bash
# README demo command: installs what the lab needs, then runs scripts/demo.ts with the project's Node.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x node_modules/.bin/node ]] || npm ci --no-audit --no-fund
[[ $EUID -eq 0 ]] && bash scripts/install-system-deps.sh
exec node_modules/.bin/node scripts/demo.ts
