#!/usr/bin/env bash
# Builds the container image with podman, without a registry.
#
#   scripts/image.sh conf    write the podman configuration (see below), print its path
#   scripts/image.sh base    make the local debian:bookworm-slim base image if missing
#   scripts/image.sh build   both, then `podman build` the image and print its name
#                            ($SWITCHYARD_IMAGE, default localhost/switchyard:test-<checkout hash>)
#
# No registry is reachable on the test machines, so the Dockerfile's unchanged
# `FROM debian:bookworm-slim` is satisfied by a base image made here: a
# debootstrap --variant=minbase of bookworm from the Debian mirror, trimmed like
# the official slim image (no apt lists, docs, man pages, locales), imported and
# tagged under the name the Dockerfile asks for. It is kept in podman's storage
# and only made when `podman image exists` says it is missing.
#
# podman needs, on these machines: the runc runtime (crun refuses the hybrid
# cgroup layout), cgroupfs and a file events log (no systemd), and default
# ulimits no higher than the machine allows. They go in a containers.conf named
# by CONTAINERS_CONF (default /var/cache/switchyard/containers.conf).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${SWITCHYARD_CACHE:-/var/cache/switchyard}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$CACHE/containers.conf}
# One tag per checkout, so that test runs of two worktrees on one machine do
# not test each other's image.
IMAGE=${SWITCHYARD_IMAGE:-localhost/switchyard:test-$(pwd -P | sha256sum | cut -c1-12)}
BASE=docker.io/library/debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

conf() {
	mkdir -p "$(dirname "$CONTAINERS_CONF")"
	local tmp="$CONTAINERS_CONF.tmp.$$"
	cat >"$tmp" <<'CONF'
# Written by scripts/image.sh.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
	mv "$tmp" "$CONTAINERS_CONF"
}

base() {
	conf
	if podman image exists "$BASE"; then
		return 0
	fi
	local root
	root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
	echo "image.sh: making $BASE with debootstrap from $MIRROR" >&2
	if ! debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1; then
		tail -20 "$root.log" >&2
		rm -rf "$root" "$root.log"
		return 1
	fi
	rm -f "$root.log"
	# The same sources as the official image (deb822, updates and security).
	rm -f "$root/etc/apt/sources.list"
	cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	# Trim like the slim image, and keep apt from growing it again.
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
		"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
		"$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
	cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
	printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
	tar -C "$root" --numeric-owner -c . | podman import --quiet - "$BASE" >/dev/null
	rm -rf "$root"
	podman image exists "$BASE"
}

build() {
	base
	local rev old new
	rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
	old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
	podman build --quiet --pull=never --layers \
		--build-arg "VERSION=$(sed -n 's/^project(switchyard VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)" \
		--build-arg "REVISION=$rev" \
		-t "$IMAGE" -f Dockerfile . >/dev/null
	new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
	# The image this build replaced would otherwise pile up, untagged, on
	# every source change (the layer cache of the build stage is kept).
	if [ -n "$old" ] && [ "$old" != "$new" ]; then
		podman rmi "$old" >/dev/null 2>&1 || true
	fi
	echo "$IMAGE"
}

case "${1:-build}" in
conf) conf && echo "$CONTAINERS_CONF" ;;
base) base ;;
build) build ;;
*)
	echo "usage: $0 conf|base|build" >&2
	exit 2
	;;
esac
