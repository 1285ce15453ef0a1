#!/usr/bin/env bash
# The main job on embedded defaults: set up the machine, then run the CDS gateway (`greenbridge serve`) on
# http://127.0.0.1:8080 with a SQLite store in ./var. Extra arguments go to `greenbridge serve`
# (e.g. `bash deploy/run.sh --port 9000`; `--config FILE` for a TOML configuration, see docs/configuration.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
gb_setup
cd "$GB_ROOT"
exec "$GB_VENV/bin/greenbridge" serve "$@"
