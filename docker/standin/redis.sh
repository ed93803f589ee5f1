#!/usr/bin/env bash
# A stand-in for Docker Hub's `redis:7`, made from Debian bookworm's redis-server (Redis 7.0), for
# running docker-compose.yml where no registry but Debian's can be reached (tests/test_compose.py).
# It has what the compose file uses of the real one: `redis-server` as the command, run as the
# `redis` user in /data, on port 6379 of every address with protected mode off (the official
# image builds Redis so), `redis-cli ping` for the health check. The entrypoint
# (redis/docker-entrypoint.sh) is our own, not the official one. Needs mmdebstrap and podman.
# Usage: docker/standin/redis.sh   (FORCE=1 makes it again even when up to date)
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
standin_image docker.io/library/redis:7 redis redis-server,redis-tools \
    --customize-hook='copy-in redis/docker-entrypoint.sh /usr/local/bin' \
    --customize-hook='mkdir -p "$1"/data && chroot "$1" chown redis:redis /data' \
    -- \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'VOLUME /data' \
    'WORKDIR /data' \
    'ENTRYPOINT ["docker-entrypoint.sh"]' \
    'EXPOSE 6379' \
    'CMD ["redis-server"]'
