#!/bin/sh
# Make sure the Dockerfile's base image is in podman's store: keep it if it is there (a rerun costs nothing),
# else pull it, else build a stand-in from Debian packages (no container registry reachable; about 40 s).
# The stand-in's Python is Debian's 3.11.2 in /usr/bin, not the official image's /usr/local build.
# Usage: docker/base-image.sh [DEBIAN_MIRROR]   (podman only; needs root and debootstrap for the stand-in)
set -eu
base=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$(dirname "$0")/../Dockerfile" | head -n 1)
case "$base" in */*) ;; *) base="docker.io/library/$base" ;; esac
podman image exists "$base" && exit 0
podman pull --quiet "$base" >/dev/null 2>&1 && exit 0
echo "base-image: cannot pull $base; building a stand-in from Debian packages" >&2
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "${1:-http://deb.debian.org/debian}" >/dev/null
ln -sf python3 "$rootfs/usr/bin/python"
tar -C "$rootfs" -c . | podman import --quiet \
    --change 'LABEL org.opencontainers.image.description=stand-in built by docker/base-image.sh' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$base" >/dev/null
echo "base-image: built stand-in $base" >&2
