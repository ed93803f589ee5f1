#!/usr/bin/env bash
# Podman as these machines need it (FIELD-NOTES): Debian's packages, runc (crun refuses this host's
# cgroups), catatonit (compose's `init: true`) and a default file limit under the host's hard
# limit. For tests/test_image.py and tests/test_compose.py; run as root. Leaves an existing
# /etc/containers/containers.conf alone.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for binary in podman mmdebstrap runc iptables; do
    command -v "$binary" >/dev/null || need+=("$binary")
done
[ -x /usr/libexec/podman/catatonit ] || need+=(catatonit)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        podman buildah fuse-overlayfs netavark aardvark-dns iptables runc mmdebstrap catatonit \
        >/dev/null
fi
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ]; then
    mkdir -p /etc/containers
    cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
fi
