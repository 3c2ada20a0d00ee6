#!/usr/bin/env bash
# Create or update a virtualenv from a pinned requirements file, only when the file's
# content changed since the last install (its hash is kept inside the venv).
set -euo pipefail
venv=$1 requirements=$2
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "venv: installing $requirements into $venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -r "$requirements"
echo "$want" >"$stamp"
