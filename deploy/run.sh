#!/usr/bin/env bash
# The main job on embedded defaults. Until the gateway lands (`greenbridge serve`), this generates a
# deterministic demo Green Button feed and translates it into CDS JSON.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
gb_setup
out="${GREENBRIDGE_DEMO_DIR:-$GB_ROOT/demo}"
mkdir -p "$out"
"$GB_VENV/bin/greenbridge" generate --usage-points 3 --days 31 -o "$out/demo-feed.xml"
"$GB_VENV/bin/greenbridge" validate "$out/demo-feed.xml"
"$GB_VENV/bin/greenbridge" translate "$out/demo-feed.xml" -o "$out/demo-cds.json"
echo "CDS objects written to $out/demo-cds.json" >&2
