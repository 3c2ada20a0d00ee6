#!/bin/sh
# Initialise the cluster on first start: one database and owner role per service
# (web, registry, redeem), password from DEV_DB_PASSWORD; then run postgres as PID 1.
set -eu
: "${DEV_DB_PASSWORD:?DEV_DB_PASSWORD is required}"
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  runuser -u postgres -- initdb -D "$PGDATA" -U postgres --auth-local=peer \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  runuser -u postgres -- pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for db in web registry redeem; do
    runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qX -U postgres -d postgres \
      -v db="$db" -v pw="$DEV_DB_PASSWORD" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"db";
SQL
  done
  runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "dev-postgres: initialised databases web, registry, redeem"
fi
exec runuser -u postgres -- postgres -D "$PGDATA"
