#!/usr/bin/env bash
# Make this machine ready for the app tests, idempotently (Debian 12, run as root):
# Debian's postgresql (started when it does not answer, without systemd), chromium and haproxy,
# and a PostgreSQL superuser role named after the current OS user for peer authentication.
set -euo pipefail

need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  echo "test-setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! pg_isready -q -h /var/run/postgresql; then
  cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
  if [[ -z "$cluster" ]]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    pg_createcluster "$version" main >/dev/null
    cluster="$version main"
  fi
  echo "test-setup: starting PostgreSQL cluster $cluster" >&2
  # shellcheck disable=SC2086
  pg_ctlcluster $cluster start
  for _ in $(seq 1 30); do pg_isready -q -h /var/run/postgresql && break; sleep 1; done
fi
pg_isready -h /var/run/postgresql >/dev/null || { echo "test-setup: PostgreSQL does not answer" >&2; exit 1; }

me=$(id -un)
if ! runuser -u postgres -- psql -qtAX -c "SELECT 1 FROM pg_roles WHERE rolname = '$me'" | grep -q 1; then
  echo "test-setup: creating PostgreSQL superuser role $me (peer authentication)" >&2
  runuser -u postgres -- createuser --superuser "$me"
fi
