#!/bin/sh
# Before the web process serves: apply migrations and create the admin account named in
# DJANGO_SUPERUSER_* (once; later starts leave it alone). Replicas starting together take turns.
# Then run the command (daphne by default).
set -eu
# The database and Redis may still be starting: wait for them (CHAT_STARTUP_WAIT seconds at most)
# rather than crash on the first connection.
python manage.py wait_for_services --timeout "${CHAT_STARTUP_WAIT:-60}"
python manage.py run_locked migrate --noinput
python manage.py run_locked ensure_superuser
exec "$@"
