#!/bin/sh
# Apply migrations before the web process serves, then run the command (daphne by default).
set -eu
python manage.py migrate --noinput
exec "$@"
