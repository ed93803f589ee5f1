#!/bin/sh
# Before the web process serves: apply migrations and create the admin account named in
# DJANGO_SUPERUSER_* (once; later starts leave it alone). Replicas starting together take turns.
# Then run the command (daphne by default).
set -eu
python manage.py run_locked migrate --noinput
python manage.py run_locked ensure_superuser
# Needed only by ensure_superuser: the server (and anything it starts) never holds it.
unset DJANGO_SUPERUSER_PASSWORD
exec "$@"
