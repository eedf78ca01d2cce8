#!/usr/bin/env bash
# Set up everything the tests need, then run lint, type checks and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k hosts
#
# The suite runs in two pytest processes (TEST_WORKERS, default 2): most real runs wait on
# TensorFlow's start-up, SSH and polling, so two overlap well even on two cores. Tests marked
# `serial` measure CPU contention and run alone afterwards. mypy checks the packages meanwhile.
# Each pytest run ends with its count of skipped tests; under CI (CI=true, 1 or yes) a test
# that would skip fails instead and a run that skipped anything fails (tests/conftest.py).
# After every test the harness fails it if it left a process, lock or run folder behind.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/system-packages.sh
scripts/setup.sh dev
venv=${VENV:-.venv}
export PATH="$PWD/$venv/bin:$PATH"
# Bytecode caches on: otherwise each of the hundreds of fab, worker and pytest processes
# compiles the project's modules again (and pytest rewrites every test module again).
unset PYTHONDONTWRITEBYTECODE
workers=${TEST_WORKERS:-2}

echo "== ruff"
ruff check .
ruff format --check .

mypy_log=$(mktemp)
trap 'rm -f "$mypy_log"' EXIT
mypy >"$mypy_log" 2>&1 &
mypy_pid=$!

status=0
echo "== pytest (${workers} processes)"
python -m pytest -n "$workers" --dist loadgroup -m "not serial" "$@" || status=$?
echo "== pytest (serial)"
# Exit code 5: no test was selected (e.g. -k matched only parallel tests).
python -m pytest -m serial "$@" || { code=$?; [ "$code" -eq 5 ] || status=$code; }

echo "== mypy"
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"
[ "$mypy_status" -eq 0 ] || status=$mypy_status
exit "$status"
