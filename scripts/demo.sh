#!/usr/bin/env bash
# Set up, train on the embedded default (two local workers from hosts.txt), then open the
# dashboard on http://127.0.0.1:8501. Extra arguments go to `fab train`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh runtime
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"

fab deploy train --dataset "${DATASET:-digits}" "$@"
exec streamlit run dashboard/app.py
