#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite (pass -m "not slow" for the fast part).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"   # nbgrader shells out to alembic
exec python -m pytest --durations=25 "$@"   # the 25 slowest tests, to keep CI well under its time
