#!/usr/bin/env bash
# The main job on embedded defaults: set up the machine, then run the whole bridge (`greenbridge serve`): the CDS
# gateway on http://127.0.0.1:8080, a Celery worker and beat, a private redis-server and the sandbox custodian, with a
# SQLite store in ./var (docs/configuration.md, "One command"). Extra arguments go to `greenbridge serve`
# (e.g. `bash deploy/run.sh --port 9000`; `--config FILE` for a TOML configuration, see docs/configuration.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
gb_setup
cd "$GB_ROOT"
exec "$GB_VENV/bin/greenbridge" serve "$@"
