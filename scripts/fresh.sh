#!/usr/bin/env bash
# Put this machine back as close to a fresh one as it allows, for `make test-fresh`: remove the
# lab, every molecule leftover, the project's images, the venvs and the caches. The Docker
# engine and Debian's packages stay (the engine may serve others; uninstalling packages would
# only make the run slower, not different: each install step checks and installs anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "fresh: $*" >&2; }

# A stopped engine still holds its images on disk: start it so they are removed too (make test
# would start it anyway, and find them).
scripts/ensure-docker.sh
if docker info >/dev/null 2>&1; then
  # The lab's, the molecule scenarios' (molecule labels them owner=molecule) and the dev stack's
  # containers, then their volumes and networks.
  filters=(label=org.sprintpoints.lab=true label=owner=molecule label=org.sprintpoints.test
    "label=com.docker.compose.project=$(basename "$PWD")")
  for filter in "${filters[@]}"; do
    ids=$(docker ps -aq --filter "$filter")
    if [ -n "$ids" ]; then
      say "removing containers ($filter)"
      # shellcheck disable=SC2086
      docker rm -f -v $ids >/dev/null
    fi
  done
  for filter in "${filters[@]}"; do
    for kind in volume network; do
      names=$(docker "$kind" ls -q --filter "$filter")
      if [ -n "$names" ]; then
        say "removing ${kind}s ($filter)"
        # shellcheck disable=SC2086
        docker "$kind" rm $names >/dev/null
      fi
    done
  done
  # The project's images: base images, the service image, stand-ins, dev and molecule images,
  # then the dangling layers built from our base images (they carry its recipe label).
  images=$(docker images --format '{{.Repository}}:{{.Tag}}' |
    grep -E '^(sprintpoints|sprintpoints/[a-z]+|sprintpoints-standin|sprintpoints-dev/[a-z]+|molecule_local/.*):' || true)
  if [ -n "$images" ]; then
    say "removing images: $(echo "$images" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    docker rmi -f $images >/dev/null
  fi
  # Stopped containers left by failed builds carry the same label.
  docker container prune -f --filter label=org.sprintpoints.recipe-hash >/dev/null
  docker image prune -f --filter label=org.sprintpoints.recipe-hash >/dev/null
else
  say "no Docker engine answers: no container or image to remove"
fi

# The app hosts' disks are mounted under .lab (playbooks/vars/lab.yml): unmounted first, or
# rm cannot remove them.
for disk in .lab/disks/*.img; do
  [ -e "$disk" ] || continue
  if mountpoint -q "${disk%.img}"; then
    say "unmounting ${disk%.img}"
    umount "${disk%.img}"
  fi
done
say "removing the lab's files, the venvs and the caches"
rm -rf .lab inventories/lab/hosts.yml .venv app/.venv .ansible .cache .pytest_cache .ruff_cache \
  app/.pytest_cache app/.ruff_cache app/*.egg-info app/build \
  "$HOME/.cache/molecule" "$HOME/.cache/sprintpoints" "$HOME/.cache/pip" \
  "$HOME/.ansible/tmp" "$HOME/.ansible/cp"
# Role links an older molecule prerun left in the user's roles path (a fresh machine has none).
rm -f "$HOME"/.ansible/roles/sprintpoints.*
find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
say "done: the next 'make test' starts from scratch (engine and Debian packages kept)"
