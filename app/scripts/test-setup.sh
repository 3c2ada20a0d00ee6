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

# TLS on the test cluster, as on the deployed database host: a CA of its own and a server
# certificate for 127.0.0.1 and localhost (made once), so the app tests can connect with
# sslmode=verify-full (app/tests/test_db_tls.py; SPRINTPOINTS_TEST_DB_CA names the CA).
tls=/var/lib/postgresql/sprintpoints-test-tls
if [[ ! -s $tls/server.crt ]]; then
  echo "test-setup: making the test cluster's CA and server certificate in $tls" >&2
  install -d -o postgres -g postgres -m 0755 "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=sprintpoints test CA" -addext basicConstraints=critical,CA:TRUE \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 3650 -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n') \
    -out "$tls/server.crt" 2>/dev/null
  chown postgres:postgres "$tls"/server.{crt,key}
  chmod 0600 "$tls/server.key" "$tls/ca.key"
  chmod 0644 "$tls/ca.crt" "$tls/server.crt"
fi
# Debian's own cluster may already run TLS with its snakeoil certificate: ours must be the one served.
tls_now=$(runuser -u postgres -- psql -qtAX -c "SELECT current_setting('ssl') || ' ' || current_setting('ssl_cert_file')")
if [[ $tls_now != "on $tls/server.crt" ]]; then
  echo "test-setup: turning TLS on in the test cluster, with its own certificate" >&2
  runuser -u postgres -- psql -qX -v ON_ERROR_STOP=1 \
    -c "ALTER SYSTEM SET ssl_cert_file = '$tls/server.crt'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$tls/server.key'" \
    -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1
  tls_now=$(runuser -u postgres -- psql -qtAX -c "SELECT current_setting('ssl') || ' ' || current_setting('ssl_cert_file')")
  [[ $tls_now == "on $tls/server.crt" ]] ||
    { echo "test-setup: the test cluster does not serve TLS with $tls/server.crt (see its log)" >&2; exit 1; }
fi
