#!/usr/bin/env bash
# A stand-in for Docker Hub's `postgres:15`, made from Debian bookworm's postgresql-15, for running
# docker-compose.yml where no registry but Debian's can be reached (tests/test_compose.py). It has
# what the compose file uses of the real one: POSTGRES_USER/PASSWORD/DB create the role and the
# database on the first start, the data in /var/lib/postgresql/data, the server on port 5432 for
# the network (password auth), `pg_isready` for the health check. The entrypoint
# (postgres/docker-entrypoint.sh) is our own, not the official one. Needs mmdebstrap and podman.
# Usage: docker/standin/postgres.sh   (FORCE=1 makes it again even when up to date)
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
standin_image docker.io/library/postgres:15 postgres postgresql-15 \
    --customize-hook='copy-in postgres/docker-entrypoint.sh /usr/local/bin' \
    --customize-hook='rm -rf "$1"/etc/postgresql/15 "$1"/var/lib/postgresql/15' \
    --customize-hook='mkdir -p "$1"/var/lib/postgresql/data "$1"/docker-entrypoint-initdb.d' \
    --customize-hook='chroot "$1" chown -R postgres:postgres /var/lib/postgresql' \
    -- \
    'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV PGDATA=/var/lib/postgresql/data' \
    'ENV LANG=C.UTF-8' \
    'VOLUME /var/lib/postgresql/data' \
    'ENTRYPOINT ["docker-entrypoint.sh"]' \
    'STOPSIGNAL SIGINT' \
    'EXPOSE 5432' \
    'CMD ["postgres"]'
