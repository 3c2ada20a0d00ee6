#!/usr/bin/env bash
# Build the project's base images locally: no registry can be reached, so nothing is pulled.
# Each image is a debootstrapped Debian 12 imported with `docker import`, labelled with a
# hash of its recipe (the recipe function's own text); a build is skipped when the label
# of the existing image matches.
#
#   scripts/base-images.sh            build what is missing or out of date
#   scripts/base-images.sh host       only the systemd host image
#   scripts/base-images.sh runtime    only the lean runtime base
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
HOST_IMAGE=${HOST_IMAGE:-sprintpoints/host:bookworm}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-sprintpoints/runtime:bookworm}
LABEL=org.sprintpoints.recipe-hash

# The systemd host for lab and molecule hosts: reached over SSH (lab) or the docker
# connection (molecule), provisioned by Ansible, so it needs python3 and apt's bindings.
recipe_host() {
  local root=$1
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,sudo,procps,iproute2,iputils-ping,ca-certificates,curl,less \
    "$SUITE" "$root" "$MIRROR" >/dev/null
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
  # Host keys are made per container at first boot, not shared through the image.
  rm -f "$root"/etc/ssh/ssh_host_*
  cat >"$root/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
  chroot "$root" systemctl enable ssh-hostkeys.service ssh.service >/dev/null 2>&1
  # Units that make no sense in a container and only slow or fail the boot.
  chroot "$root" systemctl mask getty@tty1.service systemd-udevd.service \
    systemd-remount-fs.service apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
  sed -i 's/^#\?PermitRootLogin.*/PermitRootLogin prohibit-password/' "$root/etc/ssh/sshd_config"
  sed -i 's/^#\?UseDNS.*/UseDNS no/' "$root/etc/ssh/sshd_config"
  : >"$root/etc/machine-id"
  strip_root "$root"
}

# The lean base of the service image: the interpreter and certificates, nothing else.
# apt and dpkg stay (the image's builder stage installs python3-venv with them).
recipe_runtime() {
  local root=$1
  debootstrap --variant=minbase --include=python3,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >/dev/null
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
  strip_root "$root"
  rm -rf "$root"/usr/share/locale/* "$root"/usr/share/i18n "$root"/usr/share/zoneinfo/right \
    "$root"/usr/share/common-licenses
  find "$root"/usr/lib/python3* -name __pycache__ -type d -prune -exec rm -rf {} +
  find "$root"/usr/lib/python3*/ -maxdepth 1 -type d \
    \( -name test -o -name idlelib -o -name tkinter -o -name turtledemo -o -name lib2to3 \) \
    -exec rm -rf {} +
}

strip_root() {
  local root=$1
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/lib/apt/periodic/update-success-stamp
  # apt's cache_valid_time (Ansible's apt module) judges the index by this directory's time:
  # dated now, the emptied index would pass for fresh for an hour after every build. Date it
  # to the epoch so that every apt task on these images refreshes first.
  touch -d @0 "$root"/var/lib/apt/lists
}

recipe_hash() {
  { declare -f "recipe_$1" strip_root; echo "$SUITE $MIRROR"; } | sha256sum | cut -c1-16
}

build() {
  local kind=$1 image=$2 cmd=$3 want have root
  want=$(recipe_hash "$kind")
  have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$image" 2>/dev/null || true)
  if [ "$have" = "$want" ]; then
    echo "base-images: $image is up to date ($want)"
    return
  fi
  command -v debootstrap >/dev/null || {
    echo "base-images: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  }
  echo "base-images: building $image (recipe $want)"
  root=$(mktemp -d /var/tmp/sp-rootfs.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  "recipe_$kind" "$root"
  tar -C "$root" -c . | docker import \
    --change "LABEL $LABEL=$want" \
    --change "ENV LANG=C.UTF-8" \
    --change "CMD $cmd" - "$image" >/dev/null
  echo "base-images: $image built, $(docker image inspect -f '{{ .Size }}' "$image" | numfmt --to=iec) "
}

case "${1:-all}" in
  host) build host "$HOST_IMAGE" '["/lib/systemd/systemd"]' ;;
  runtime) build runtime "$RUNTIME_IMAGE" '["/usr/bin/python3"]' ;;
  all)
    build host "$HOST_IMAGE" '["/lib/systemd/systemd"]'
    build runtime "$RUNTIME_IMAGE" '["/usr/bin/python3"]'
    ;;
  *) echo "usage: $0 [host|runtime|all]" >&2; exit 2 ;;
esac
