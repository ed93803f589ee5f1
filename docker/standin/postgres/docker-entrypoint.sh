#!/usr/bin/env bash
# The stand-in postgres:15's entrypoint (docker/standin/postgres.sh): our own, doing what the
# official image's does for docker-compose.yml. As root it owns the data directory to `postgres`
# and runs itself again as that user. On the first start (an empty data directory) it runs
# initdb with POSTGRES_USER as the superuser and POSTGRES_PASSWORD as its password (UTF-8,
# C.UTF-8), lets every host in with that password (scram-sha-256), listens on every address,
# creates POSTGRES_DB and runs /docker-entrypoint-initdb.d/*.sql and *.sh; the temporary server
# for that listens on a private socket only, so `pg_isready` says "ready" only once the real
# server runs. Then `exec postgres`.
set -Eeuo pipefail

if [ "${1:0:1}" = "-" ]; then
    set -- postgres "$@"
fi

if [ "$1" = "postgres" ] && [ "$(id -u)" = "0" ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    chmod 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = "postgres" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    user="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$user}"
    # shellcheck disable=SC2086
    initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-}
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" \
        >>"$PGDATA/pg_hba.conf"

    socket=$(mktemp -d)
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories='$socket'" start
    psql=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -h "$socket" -U "$user")
    if [ "$database" != "postgres" ]; then
        echo 'CREATE DATABASE :"db";' | "${psql[@]}" -d postgres -v db="$database"
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) echo "running $f"; "${psql[@]}" -d "$database" -f "$f" ;;
            *.sh) echo "running $f"; PGHOST="$socket" PGUSER="$user" PGDATABASE="$database" bash "$f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    rmdir "$socket"
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
