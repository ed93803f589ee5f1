#!/usr/bin/env bash
# `make backup`: the site's PostgreSQL database, dumped (pg_dump's custom format) to
# $BACKUP_DIR/chat-<UTC time>.dump (default backups/), readable by its owner only.
# With DATABASE_URL set, that database through this machine's pg_dump (its major version must be
# at least the server's). Without it, the compose `db` service's, through `docker compose exec`.
# The dump is consistent while the site runs: no need to stop anything.
set -euo pipefail
dir=${BACKUP_DIR:-backups}
mkdir -p "$dir"
umask 077
file="$dir/chat-$(date -u +%Y%m%dT%H%M%SZ).dump"
trap 'rm -f "$file.part"' EXIT
if [ -n "${DATABASE_URL:-}" ]; then
    pg_dump --format=custom --no-owner --no-privileges --file="$file.part" "$DATABASE_URL"
else
    compose=(docker compose)
    docker compose version >/dev/null 2>&1 || compose=(docker-compose)
    "${compose[@]}" exec -T db pg_dump --format=custom --no-owner --no-privileges -U chat chat \
        >"$file.part"
fi
mv "$file.part" "$file"
echo "$file"
