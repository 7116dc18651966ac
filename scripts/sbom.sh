#!/usr/bin/env bash
# The CycloneDX SBOM of suture's own runtime dependencies, made on release from the lockfile by
# npm itself (`npm sbom`), so what ships is described by the tool that installed it.
# Usage: scripts/sbom.sh [OUT]   (default: suture-<version>.cdx.json in the current directory)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
version=$(node -p 'require(process.argv[1]).version' "$repo/package.json")
out="${1:-suture-$version.cdx.json}"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$repo" && npm sbom --sbom-format cyclonedx --omit dev) >"$tmp"
node -e '
  const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (j.bomFormat !== "CycloneDX" || !Array.isArray(j.components)) throw new Error("npm sbom gave no CycloneDX document");
' "$tmp"
mv "$tmp" "$out"
echo "$out"
