#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs the linter and all tests.
# Extra arguments go to pytest (e.g. tests/run.sh -k scope).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/setup.sh"
gb_setup test
cd "$GB_ROOT"
# A missing PostgreSQL or Chromium fails the tests that need them instead of skipping them (tests/conftest.py).
export GREENBRIDGE_REQUIRE_SERVERS=1
export GREENBRIDGE_HYPOTHESIS_PROFILE="${GREENBRIDGE_HYPOTHESIS_PROFILE:-repeatable}"
"$GB_VENV/bin/ruff" check .
"$GB_VENV/bin/python" -m pytest "$@"
