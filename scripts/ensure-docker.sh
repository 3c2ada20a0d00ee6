#!/usr/bin/env bash
# Make sure a Docker engine answers. An engine that already runs is used as it is and
# never restarted; otherwise Debian's docker.io is installed (when missing) and dockerd is
# started in the background, because the control node may have no systemd (CI, containers).
set -euo pipefail

engine_answers() { docker info >/dev/null 2>&1; }

if engine_answers; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: no Docker engine; installing Debian's docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if engine_answers; then  # the package's own service may have started it
  exit 0
fi

echo "ensure-docker: starting dockerd in the background (log: /var/log/dockerd.log)" >&2
setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &

for _ in $(seq 1 60); do
  engine_answers && { echo "ensure-docker: engine is up" >&2; exit 0; }
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
