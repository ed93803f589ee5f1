#!/usr/bin/env bash
# `make restore FILE=backups/chat-….dump`: replace the site's database with a dump from
# `make backup`, in one transaction (a failure changes nothing).
# With DATABASE_URL set, that database through this machine's pg_restore: stop the site's server
# processes first. Without it, the compose stack's: the web replicas are stopped for the restore
# and started again after it. Open pages then reconnect; their cursors are ahead of the restored
# rooms, so each gets the room afresh (`ready` with `reset: true`).
set -euo pipefail
file=${1:-}
if [ -z "$file" ] || [ ! -f "$file" ]; then
    echo "usage: make restore FILE=backups/chat-<time>.dump (no such file: '${file}')" >&2
    exit 2
fi
options=(--clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error)
if [ -n "${DATABASE_URL:-}" ]; then
    pg_restore "${options[@]}" --dbname="$DATABASE_URL" "$file"
else
    compose=(docker compose)
    docker compose version >/dev/null 2>&1 || compose=(docker-compose)
    "${compose[@]}" stop web
    trap '"${compose[@]}" start web' EXIT
    "${compose[@]}" exec -T db pg_restore "${options[@]}" -U chat --dbname=chat <"$file"
fi
echo "restored $file"
