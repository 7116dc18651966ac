#!/usr/bin/env bash
# `npm audit` of suture's runtime dependencies, as CI runs it: fails on any known advisory of
# moderate severity or worse. When the registry's advisory endpoint cannot be reached (a
# network that serves packages but not the audit API answers 405 or nothing), it says so and
# passes: an unreachable endpoint is not evidence of a vulnerability, and CI must still run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(npm audit --omit=dev --audit-level=moderate --json 2>/dev/null)
rc=$?
verdict=$(node -e '
  let j; try { j = JSON.parse(require("fs").readFileSync(0, "utf8")); } catch { console.log("unreadable"); process.exit(); }
  if (j.metadata?.vulnerabilities) {
    const v = j.metadata.vulnerabilities;
    console.log(`counted ${v.moderate + v.high + v.critical}`);
  } else if (j.statusCode || j.error) console.log(`unreachable ${j.statusCode ?? j.error?.code ?? ""}`);
  else console.log("unreadable");
' <<<"$out")
case "$verdict" in
  "counted 0") echo "npm audit: no known advisories of moderate severity or worse in runtime dependencies" ;;
  counted*) npm audit --omit=dev --audit-level=moderate; exit 1 ;;
  unreachable*) echo "npm audit: skipped: the registry's advisory endpoint is not reachable from here (${verdict#unreachable })" ;;
  *) echo "npm audit: unexpected output (exit $rc):"; echo "$out" | head -20; exit 1 ;;
esac
