#!/usr/bin/env bash
# A stand-in for Docker Hub's `python:3.11-slim`, made from Debian bookworm's packages, for
# building the image where no registry but Debian's and PyPI can be reached (CI, these machines).
# It has what the Dockerfile uses of the real one: python/python3/pip on /usr/local/bin, pip
# allowed to install system-wide, CA certificates (the host's extra ones too, for a TLS proxy).
# Needs Debian's mmdebstrap and podman; tagged docker.io/library/python:3.11-slim, so the
# Dockerfile builds unchanged. Usage: docker/standin/python-base.sh [--force]
set -euo pipefail
tag=docker.io/library/python:3.11-slim
if [ "${1:-}" != "--force" ] && podman image exists "$tag"; then
    echo "$tag exists"
    exit 0
fi
sources=/etc/apt/sources.list.d/debian.sources
[ -e "$sources" ] || sources=/etc/apt/sources.list
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=minbase \
    --include=ca-certificates,netbase,tzdata,python3,python3-venv,python3-pip \
    --customize-hook='for n in python python3 python3.11; do ln -sf /usr/bin/python3.11 "$1/usr/local/bin/$n"; done' \
    --customize-hook='ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"; ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip3"' \
    --customize-hook='rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED' \
    --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    bookworm "$work/base.tar" "$sources"
podman import --quiet --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/base.tar" "$tag"
echo "built $tag"
