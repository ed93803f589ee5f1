# The chat site's web process: daphne serving Django and the WebSockets.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The server runs as this user; the code stays root's, so the process cannot rewrite it.
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin chat

# Dependencies in their own layer, rebuilt only when the lock changes: exactly the versions and
# files (hashes) of requirements.lock, what the site needs to run and nothing else (`make lock`
# writes it from pyproject.toml). The project itself is not installed: it runs from /app.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# The code runs from /app (manage.py's directory), as `make run` runs it from the checkout.
COPY . .
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

# Attachments (CHAT_MEDIA_ROOT): the compose file mounts a named volume here, which takes this
# directory's owner when it is first made, so the server can write it.
RUN mkdir -p /srv/chat-media && chown chat:chat /srv/chat-media
USER chat
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
# daphne, through chatsite/serve.py as everywhere (direct writes, the frame limit, the application).
# --proxy-headers: the client's address from nginx's X-Forwarded-For. -v 0: daphne's own access
# log is plain text; the site logs requests and WebSocket connections as JSON lines itself
# (chatsite/logging.py).
CMD ["python", "-m", "chatsite.serve", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "-v", "0"]
