#!/usr/bin/env bash
# Set up everything the tests need, then run lint, type checks and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k hosts
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/system-packages.sh
scripts/setup.sh dev
venv=${VENV:-.venv}
export PATH="$PWD/$venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
exec python -m pytest "$@"
