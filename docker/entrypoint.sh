#!/bin/sh
# Before the web process serves: apply migrations, erase the text of messages their authors
# deleted more than CHAT_DELETED_TEXT_RETENTION_DAYS ago, render again messages an older
# Markdown renderer made (chat/rendering.py), and create the admin account named in
# DJANGO_SUPERUSER_* (once; later starts leave it alone). Replicas starting together take turns.
# Then run the command (daphne by default), with the erasure repeated every CHAT_PURGE_INTERVAL
# seconds (a day) beside it for as long as it runs; every replica does, and the later ones find
# nothing left to erase.
set -eu
# The database and Redis may still be starting: wait for them (CHAT_STARTUP_WAIT seconds at most)
# rather than crash on the first connection.
python manage.py wait_for_services --timeout "${CHAT_STARTUP_WAIT:-60}"
python manage.py run_locked migrate --noinput
python manage.py run_locked purge_deleted_text
python manage.py run_locked render_messages
python manage.py run_locked ensure_superuser
# Needed only by ensure_superuser: the server (and anything it starts) never holds it.
unset DJANGO_SUPERUSER_PASSWORD

server=$$  # exec below keeps this process id for the command
interval="${CHAT_PURGE_INTERVAL:-86400}"
(
    while :; do
        waited=0
        while [ "$waited" -lt "$interval" ]; do
            sleep 10
            kill -0 "$server" 2>/dev/null || exit 0  # the server is gone: so is this loop
            waited=$((waited + 10))
        done
        python manage.py run_locked purge_deleted_text || echo "purge_deleted_text failed" >&2
    done
) &
exec "$@"
