#!/bin/sh
# The stand-in redis:7's entrypoint (docker/standin/redis.sh): our own, doing what the official
# image's does. Options alone (`--appendonly yes`) or a config file as the first argument mean
# `redis-server` with them; as root it owns /data to `redis` and runs itself again as that user.
# The official image compiles Redis with protected mode off (the container's network is the
# fence); Debian's Redis has it on, so it is turned off here on the command line, where a config
# file or a later option can still turn it on.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = "redis-server" ] && [ "$(id -u)" = "0" ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = "redis-server" ]; then
    shift
    if [ "${1:-}" != "" ] && [ "${1%.conf}" != "$1" ]; then
        config=$1
        shift
        set -- redis-server "$config" --protected-mode no "$@"
    else
        set -- redis-server --protected-mode no "$@"
    fi
fi

umask 0077
exec "$@"
