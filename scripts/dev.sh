#!/usr/bin/env bash
# The development stack of compose.yaml (one container per service, a dev PostgreSQL and a dev
# HAProxy), with Debian's docker-compose installed when it is missing.
#   scripts/dev.sh up     build and start it, wait until it serves, print its URL
#   scripts/dev.sh down   stop it and drop its database volume
# DEV_HTTP_PORT (default 8081, beside the lab's 8080) is where it serves on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEV_HTTP_PORT=${DEV_HTTP_PORT:-8081} APP_VERSION=${APP_VERSION:-dev}

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "dev: installing Debian's docker-compose" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq docker-compose >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
fi

case "${1:-}" in
  up)
    # The image first, through the script that lets pip in the build trust this host's CAs
    # (a TLS-inspecting proxy); compose's own build of it then finds every layer cached.
    app/scripts/build-image.sh "$APP_VERSION"
    docker-compose up -d --build
    url="http://127.0.0.1:$DEV_HTTP_PORT/"
    for _ in $(seq 1 90); do
      if curl -fsS -o /dev/null "${url}api/v1/leaderboard" 2>/dev/null; then
        echo; echo "The development stack serves sprintpoints $APP_VERSION at $url"
        exit 0
      fi
      sleep 1
    done
    docker-compose ps >&2
    echo "dev: the stack did not serve ${url}api/v1/leaderboard within 90 s; see docker-compose logs" >&2
    exit 1
    ;;
  down) docker-compose down -v --remove-orphans ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
