#!/bin/sh
# Before the web process serves: apply migrations, erase the text of messages their authors
# deleted more than CHAT_DELETED_TEXT_RETENTION_DAYS ago, render again messages an older
# Markdown renderer made (chat/rendering.py), and create the admin account named in
# DJANGO_SUPERUSER_* (once; later starts leave it alone). Replicas starting together take turns.
# Then run the command (daphne by default), with the erasure repeated every CHAT_PURGE_INTERVAL
# seconds (a day) beside it for as long as it runs, and uploads never attached to a message
# erased once they are CHAT_UPLOAD_MAX_AGE_HOURS old (`purge_uploads`, at start and every
# CHAT_UPLOAD_PURGE_INTERVAL seconds, an hour); every replica does, and the later ones find
# nothing left to erase.
set -eu
# The database and Redis may still be starting: wait for them (CHAT_STARTUP_WAIT seconds at most)
# rather than crash on the first connection.
python manage.py wait_for_services --timeout "${CHAT_STARTUP_WAIT:-60}"
python manage.py run_locked migrate --noinput
python manage.py run_locked purge_deleted_text
python manage.py run_locked purge_uploads
python manage.py run_locked render_messages
python manage.py run_locked ensure_superuser
# Needed only by ensure_superuser: the server (and anything it starts) never holds it.
unset DJANGO_SUPERUSER_PASSWORD

server=$$  # exec below keeps this process id for the command
# `every SECONDS COMMAND`: run the management command every SECONDS while the server runs.
every() {
    (
        while :; do
            waited=0
            while [ "$waited" -lt "$1" ]; do
                sleep 10
                kill -0 "$server" 2>/dev/null || exit 0  # the server is gone: so is this loop
                waited=$((waited + 10))
            done
            python manage.py run_locked "$2" || echo "$2 failed" >&2
        done
    ) &
}
every "${CHAT_PURGE_INTERVAL:-86400}" purge_deleted_text
every "${CHAT_UPLOAD_PURGE_INTERVAL:-3600}" purge_uploads
exec "$@"
