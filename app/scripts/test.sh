#!/usr/bin/env bash
# Run the whole app test suite from a fresh Debian 12 machine (as root):
#   app/scripts/test.sh [pytest args...]
# Creates app/.venv from app/requirements*.txt when missing or changed, makes PostgreSQL,
# chromium and haproxy ready (scripts/test-setup.sh), then runs pytest.
set -euo pipefail
app=$(cd "$(dirname "$0")/.." && pwd)
cd "$app"

"$app/scripts/test-setup.sh"

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "test.sh: preparing app/.venv" >&2
  /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
  # An isolated build: the venv's own setuptools (Debian's 66) cannot build an editable
  # wheel without the wheel package. A failure here stops the run (set -e).
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi

exec .venv/bin/python -m pytest "$@"
