#!/usr/bin/env bash
# Build sprintpoints:<version> from the repo root's Dockerfile.
#   app/scripts/build-image.sh [VERSION]     (default: the short git commit, else "dev")
# Extra build arguments can be passed in DOCKER_BUILD_ARGS (e.g. "--build-arg BASE_IMAGE=...").
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
version=${1:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo dev)}

# pip inside the build trusts what this host trusts (needed behind a TLS-inspecting proxy).
bundle=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
target="$root/app/build-ca/ca-bundle.pem"
if [[ -s "$bundle" ]] && ! cmp -s "$bundle" "$target"; then
  cp "$bundle" "$target"
fi

# shellcheck disable=SC2086
docker build ${DOCKER_BUILD_ARGS:-} --build-arg APP_VERSION="$version" \
  -t "sprintpoints:$version" "$root"
echo "built sprintpoints:$version"
