#!/usr/bin/env bash
# Make .venv hold every Python package the project needs; reinstall only when a
# requirements file changed. Usage: scripts/setup.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-runtime}
venv=${VENV:-.venv}
req=requirements.txt
[ "$profile" = dev ] && req=requirements-dev.txt

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup: $python not found; install Python 3.10 or newer (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi

stamp="$venv/.setup-stamp-$profile"
digest=$(cat requirements*.txt trainer/requirements.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "setup: installing Python packages from $req (first time: a few minutes)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  # The project itself, editable: `streamlit run dashboard/app.py` and the benchmarks import
  # trainer, launcher, dashboard and runformat from this folder. A linked venv is shared with
  # other checkouts: installing this one into it would redirect their imports here.
  if [ -L "$venv" ]; then
    echo "setup: $venv is a link to a shared environment; not installing this checkout into it"
  else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
  fi
  echo "$digest" > "$stamp"
fi

# Plotly.js' cartesian bundle for the dashboard (dashboard/plotlybundle.py: a third of the full
# bundle, so the first chart comes sooner), fetched once from the npm registry and checked
# against its pinned digest. Without it the dashboard serves plotly's own full bundle.
"$venv/bin/python" -m dashboard.plotlybundle >/dev/null || true
