#!/usr/bin/env bash
# Builds (or finds cached) the test lab's Debian images so later test runs start warm.
# Usage: scripts/build-lab-images.sh [RECIPE...]   (default: bookwormMinbase bookwormNginx)
# Recipes are defined in test/lab/images.ts; bookwormMinbaseArm64 takes ~4 min under emulation.
# Cache: $SUTURE_LAB_CACHE or /var/cache/suture-lab. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
recipes=("$@")
((${#recipes[@]})) || recipes=(bookwormMinbase bookwormNginx)
for r in "${recipes[@]}"; do
  ./node_modules/.bin/node --input-type=module -e '
    import { labImage } from "./test/lab/images.ts";
    const img = await labImage(process.argv[1]);
    console.log(`${process.argv[1]}: ${img.reference} ${img.manifestDigest} (${img.built ? "built" : "cached"})`);
  ' "$r"
done
