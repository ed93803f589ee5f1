"""Settings for the chat site.

One module for every environment: production values come from environment variables, and the
defaults are safe for a local run (SQLite file, in-memory channel layer, DEBUG off unless asked).
"""

import logging
import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

logger = logging.getLogger("chatsite")


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


# An empty value means "not set" everywhere: docker-compose.yml passes every setting to the web
# service as `${NAME:-}`, so a setting missing from .env arrives empty.


def env_list(name: str, default: str = "") -> list[str]:
    value = os.environ.get(name) or default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


DEBUG = env_bool("DJANGO_DEBUG", False)


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off "
            "(for a local run, `make run` sets DJANGO_DEBUG=1)."
        )
    # Local development only: a random key kept in an ignored file, so sessions survive restarts
    # and no key is ever committed.
    path = BASE_DIR / ".secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "chat",
]

MIDDLEWARE = [
    "chatsite.middleware.RequestLogMiddleware",
    "chatsite.middleware.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chatsite.middleware.SiteNotFoundMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL (PostgreSQL in the deployment), else an SQLite file in the project.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=0, conn_health_checks=True
    )
}
# PostgreSQL connections come from one pool per server process, bounded whatever the traffic.
# Persistent connections (CONN_MAX_AGE > 0) do not fit ASGI: every HTTP request runs in a thread
# of its own, and each thread's connection stayed open until the garbage collector found it, so
# a burst of requests held every connection PostgreSQL had (issue 14). With the pool a request
# borrows a connection and gives it back when it ends; past DATABASE_POOL_MAX_SIZE requests wait
# (up to DATABASE_POOL_TIMEOUT seconds) instead of opening more. Each replica holds at most
# DATABASE_POOL_MAX_SIZE connections: N replicas need N x that below PostgreSQL's
# max_connections (README, "More servers"). 0 turns the pool off: a connection per request.
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 10)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX_SIZE:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 10),
        # Connections idle this long are closed (down to min_size), and none lives past an hour.
        "max_idle": 300,
        "max_lifetime": 3600,
        "name": "chatsite",
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers (several sockets posting at once) must wait for the lock, not fail.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Server subprocesses in tests share the test database, so it must be a file, not :memory:;
    # one per test run, so two runs at once do not trample each other.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"chatsite-test-{os.getpid()}.sqlite3")
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: wherever more than one process runs; in memory for a plain local run. Every client the
# site makes comes from chat/redis_connections.py; the channel layer's from CHANNEL_LAYERS below.
# Precedence: REDIS_SENTINELS (the primary of REDIS_SENTINEL_MASTER, as the sentinels report it,
# followed through failovers; REDIS_URL then only gives the primary's password and database) over
# REDIS_URL (one server). CHANNEL_LAYER_URLS, when set, spreads the channel layer alone over
# several servers (README, "Redis that survives its host").
REDIS_URL = os.environ.get("REDIS_URL", "")


def _host_port(item: str) -> tuple[str, int]:
    """`host:port` (port 26379 when left out; an IPv6 address in brackets)."""
    host, colon, port = item.rpartition(":")
    if not colon or host.endswith(":"):
        host, port = item, "26379"
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {item!r} is not host:port")
    return host.strip("[]"), int(port)


REDIS_SENTINELS = [_host_port(item) for item in env_list("REDIS_SENTINELS")]
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER") or "mymaster"
REDIS_SENTINEL_PASSWORD = os.environ.get("REDIS_SENTINEL_PASSWORD", "")
CHANNEL_LAYER_URLS = env_list("CHANNEL_LAYER_URLS")
if CHANNEL_LAYER_URLS and not (REDIS_URL or REDIS_SENTINELS):
    raise ImproperlyConfigured(
        "CHANNEL_LAYER_URLS carries the channel layer only: presence and limits need REDIS_URL "
        "or REDIS_SENTINELS too."
    )


def _channel_layer_hosts() -> list:
    if CHANNEL_LAYER_URLS:
        # channels-redis hashes each channel and group name onto one of these servers.
        return CHANNEL_LAYER_URLS
    if REDIS_SENTINELS:
        from chat.redis_connections import master_options

        sentinel_kwargs = {"password": REDIS_SENTINEL_PASSWORD} if REDIS_SENTINEL_PASSWORD else {}
        return [
            {
                "sentinels": REDIS_SENTINELS,
                "master_name": REDIS_SENTINEL_MASTER,
                "sentinel_kwargs": sentinel_kwargs,
                **master_options(REDIS_URL),
            }
        ]
    return [REDIS_URL]


if REDIS_URL or REDIS_SENTINELS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": _channel_layer_hosts(),
                # Only one reader per process (the room hub) takes from the layer; give it room.
                # Overflow loses doorbells, not messages: hubs fill gaps from the database.
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 5000),
                "expiry": 30,
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Django's cache, in Redis when there is one (nothing in the site uses it: our limits use
# chat.throttle). chat.redis_connections.SharedRedisCache follows REDIS_SENTINELS too.
CACHES = {
    "default": (
        {"BACKEND": "chat.redis_connections.SharedRedisCache"}
        if REDIS_URL or REDIS_SENTINELS
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Every password check passes the login throttle first (chat/accounts.py); sessions name
# ModelBackend, as before.
AUTHENTICATION_BACKENDS = [
    "chat.accounts.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Attachments (PROTOCOL.md §8, chat/attachments.py) go through the storage called "attachments":
# a local directory by default (a named volume in docker-compose.yml), or an S3-compatible object
# store when CHAT_S3_BUCKET is set (README, "Files on S3"). Never a public folder: every file is
# served by a view that asks the access policy first.
CHAT_MEDIA_ROOT = os.environ.get("CHAT_MEDIA_ROOT") or str(BASE_DIR / "media")
CHAT_S3_BUCKET = os.environ.get("CHAT_S3_BUCKET", "")
CHAT_S3_ENDPOINT_URL = os.environ.get("CHAT_S3_ENDPOINT_URL", "")
# Seconds a signed download link stays good: the view checks the policy at each request and
# redirects to a fresh link, so keep it short.
CHAT_S3_URL_EXPIRY = env_int("CHAT_S3_URL_EXPIRY", 60)


def _attachment_storage() -> dict:
    if not CHAT_S3_BUCKET:
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": CHAT_MEDIA_ROOT, "base_url": None},
        }
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": CHAT_S3_BUCKET,
            "endpoint_url": CHAT_S3_ENDPOINT_URL or None,
            "access_key": os.environ.get("CHAT_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("CHAT_S3_SECRET_ACCESS_KEY") or None,
            "region_name": os.environ.get("CHAT_S3_REGION") or None,
            # Another store than AWS (MinIO, Ceph, a provider's) rarely has a DNS name per bucket.
            "addressing_style": "path" if CHAT_S3_ENDPOINT_URL else None,
            "signature_version": "s3v4",
            "default_acl": None,  # private: reached only through a signed link
            "querystring_auth": True,
            "querystring_expire": CHAT_S3_URL_EXPIRY,
            "file_overwrite": False,
        },
    }


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "attachments": _attachment_storage(),
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Security: cookies and HTTPS settings follow the deployment (TLS terminated at the proxy).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (chatsite.middleware): scripts, styles, images and connections from this
# site only, no inline script or style (the templates have none; nor has Django's admin), no
# framing. The middleware adds the page's own ws:// or wss:// origin to connect-src.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",  # data: for the favicon (templates/base.html)
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "object-src": "'none'",
}
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env_bool("DJANGO_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000 if HTTPS else 0)
# Both bind more than this site (every subdomain; browsers' built-in lists, slow to leave), so
# they are off unless asked for.
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS and env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = HTTPS and env_bool("DJANGO_HSTS_PRELOAD", False)
# `check --deploy` warns about each while it is off: off is the choice made above.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
if env_bool("DJANGO_TRUST_PROXY_HEADERS", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
# Health probes (Docker's HEALTHCHECK, a load balancer) speak plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Chat limits (PROTOCOL.md defaults).
CHAT_MAX_BODY = env_int("CHAT_MAX_BODY", 4000)
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 64 * 1024)
# Combining marks (accents) stacked on one character; more is answered `invalid` (chat/text.py).
CHAT_MAX_COMBINING = env_int("CHAT_MAX_COMBINING", 8)
# Messages in `ready` and a `history` page by default, and the most a `history` may ask for.
CHAT_HISTORY_PAGE = env_int("CHAT_HISTORY_PAGE", 50)
CHAT_HISTORY_MAX = env_int("CHAT_HISTORY_MAX", 100)
# A resume (`?since=`) further behind than this many changes gets the room afresh (`reset`).
CHAT_RESUME_MAX_CHANGES = env_int("CHAT_RESUME_MAX_CHANGES", 1000)
# Distinct emoji on one message (§6 `react`); one more is answered `too_many`.
CHAT_MAX_REACTIONS = env_int("CHAT_MAX_REACTIONS", 20)
# Not a setting: daphne's --websocket-max-message-size bounds frames both ways (2 MiB,
# chatsite/serve.py), so a replay larger than this is not served (the client gets a fresh
# `ready`).
CHAT_MAX_REPLAY_BYTES = 1536 * 1024
CHAT_RATE_LIMIT_POSTS = env_int("CHAT_RATE_LIMIT_POSTS", 10)
CHAT_RATE_LIMIT_WINDOW = env_int("CHAT_RATE_LIMIT_WINDOW", 5)
# Edits, deletions, reactions (every later state-changing frame) per user, all rooms, per window.
CHAT_RATE_LIMIT_CHANGES = env_int("CHAT_RATE_LIMIT_CHANGES", 20)
CHAT_RATE_LIMIT_CHANGES_WINDOW = env_int("CHAT_RATE_LIMIT_CHANGES_WINDOW", 10)
# Typing notices: at most one per user per room per this many seconds.
CHAT_TYPING_INTERVAL = env_float("CHAT_TYPING_INTERVAL", 3)
CHAT_RATE_LIMIT_HISTORY = env_int("CHAT_RATE_LIMIT_HISTORY", 30)
CHAT_RATE_LIMIT_HISTORY_WINDOW = env_int("CHAT_RATE_LIMIT_HISTORY_WINDOW", 10)
CHAT_MAX_SOCKETS_PER_USER = env_int("CHAT_MAX_SOCKETS_PER_USER", 20)
CHAT_LOGIN_FAILURES_PER_USER = env_int("CHAT_LOGIN_FAILURES_PER_USER", 5)
CHAT_LOGIN_FAILURES_PER_ADDRESS = env_int("CHAT_LOGIN_FAILURES_PER_ADDRESS", 20)
CHAT_LOGIN_FAILURE_WINDOW = env_int("CHAT_LOGIN_FAILURE_WINDOW", 300)
CHAT_SIGNUPS_PER_ADDRESS = env_int("CHAT_SIGNUPS_PER_ADDRESS", 5)
CHAT_SIGNUP_WINDOW = env_int("CHAT_SIGNUP_WINDOW", 3600)
CHAT_PASSWORD_RESETS_PER_ADDRESS = env_int("CHAT_PASSWORD_RESETS_PER_ADDRESS", 5)
CHAT_PASSWORD_RESETS_PER_EMAIL = env_int("CHAT_PASSWORD_RESETS_PER_EMAIL", 3)
CHAT_PASSWORD_RESET_WINDOW = env_int("CHAT_PASSWORD_RESET_WINDOW", 3600)
# The text of a message its author deleted is erased this many days later
# (`manage.py purge_deleted_text`); moderators' hides keep theirs for the audit.
CHAT_DELETED_TEXT_RETENTION_DAYS = env_int("CHAT_DELETED_TEXT_RETENTION_DAYS", 30)
# Rooms one user may create per window (seconds), from the site's form (chat.services.create_room).
CHAT_ROOMS_PER_USER = env_int("CHAT_ROOMS_PER_USER", 10)
CHAT_ROOMS_PER_USER_WINDOW = env_int("CHAT_ROOMS_PER_USER_WINDOW", 3600)
# Adding, removing, joining, leaving and opening direct conversations, per user (PROTOCOL.md §4).
CHAT_RATE_LIMIT_MEMBERSHIP = env_int("CHAT_RATE_LIMIT_MEMBERSHIP", 30)
CHAT_RATE_LIMIT_MEMBERSHIP_WINDOW = env_int("CHAT_RATE_LIMIT_MEMBERSHIP_WINDOW", 60)
# The username type-ahead (GET /api/users), per user.
CHAT_RATE_LIMIT_LOOKUPS = env_int("CHAT_RATE_LIMIT_LOOKUPS", 60)
CHAT_RATE_LIMIT_LOOKUPS_WINDOW = env_int("CHAT_RATE_LIMIT_LOOKUPS_WINDOW", 10)
# Searches (§7) per user per window.
CHAT_RATE_LIMIT_SEARCH = env_int("CHAT_RATE_LIMIT_SEARCH", 20)
CHAT_RATE_LIMIT_SEARCH_WINDOW = env_int("CHAT_RATE_LIMIT_SEARCH_WINDOW", 10)
# Attachments (§8): bytes per file (nginx's client_max_body_size in deploy/nginx-common.conf is a
# little more: the multipart envelope), bytes per user in all (their files not yet erased),
# uploads per user per window, and the most pixels an image may have (width x height x frames;
# more is refused before it is decoded). Thumbnails fit in a square this many pixels wide.
CHAT_MAX_UPLOAD_BYTES = env_int("CHAT_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
CHAT_UPLOAD_QUOTA_BYTES = env_int("CHAT_UPLOAD_QUOTA_BYTES", 1024**3)
CHAT_RATE_LIMIT_UPLOADS = env_int("CHAT_RATE_LIMIT_UPLOADS", 20)
CHAT_RATE_LIMIT_UPLOADS_WINDOW = env_int("CHAT_RATE_LIMIT_UPLOADS_WINDOW", 60)
CHAT_MAX_IMAGE_PIXELS = env_int("CHAT_MAX_IMAGE_PIXELS", 50_000_000)
CHAT_THUMBNAIL_SIZE = env_int("CHAT_THUMBNAIL_SIZE", 400)
# Uploads never attached to a message are erased after this many hours (`manage.py
# purge_uploads`, run by the web container's entrypoint loop every CHAT_UPLOAD_PURGE_INTERVAL s).
CHAT_UPLOAD_MAX_AGE_HOURS = env_int("CHAT_UPLOAD_MAX_AGE_HOURS", 24)
# Behind nginx (docker-compose.yml sets it): Django checks the policy and answers with
# X-Accel-Redirect to nginx's internal location for the media volume, and nginx sends the bytes.
# Off (`make run`), Django sends the file itself.
CHAT_MEDIA_ACCEL = env_bool("CHAT_MEDIA_ACCEL", False)
# Django holds an upload in memory up to this size, on disk (FILE_UPLOAD_TEMP_DIR) past it; the
# upload view refuses a body over CHAT_MAX_UPLOAD_BYTES by its Content-Length before reading it.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# PostgreSQL text-search configurations a message is indexed in (a word matches in any of them);
# after changing it, run `manage.py rebuild_search_index`.
CHAT_SEARCH_CONFIGS = os.environ.get("CHAT_SEARCH_CONFIGS") or "simple,english"
# Rooms per page of the lobby's directory.
CHAT_LOBBY_PAGE_SIZE = env_int("CHAT_LOBBY_PAGE_SIZE", 50)
CHAT_PRESENCE_TTL = env_int("CHAT_PRESENCE_TTL", 45)
# Presence in a crowd (chat/realtime/hub.py): up to CHAT_PRESENCE_BURST presence frames per
# CHAT_PRESENCE_WINDOW seconds go out at once; joins and leaves beyond that wait for the window's
# end and go out together as one frame with the new online list (a reconnect storm of 1,000 users
# would otherwise send each of them 1,000 frames of up to 13 KB).
CHAT_PRESENCE_WINDOW = env_float("CHAT_PRESENCE_WINDOW", 0.25)
CHAT_PRESENCE_BURST = env_int("CHAT_PRESENCE_BURST", 3)
# How often a process compares each of its rooms' cursors with the database, in case the channel
# layer lost a doorbell (slow reader, Redis restart).
CHAT_RESYNC_INTERVAL = env_float("CHAT_RESYNC_INTERVAL", 2)
# Inboxes (§5): a room's summaries are read at most once per this many seconds; the first change
# after a quiet spell goes out at once, the rest of a burst together at the interval's end.
CHAT_INBOX_INTERVAL = env_float("CHAT_INBOX_INTERVAL", 0.25)

# How often each process checks that its sockets' sessions still stand (4401 when not). Logging
# out, a password change and deactivation through Django close the sockets at once on every
# process (chat.accounts.sessions_changed); the check catches the rest: a session expiring or
# deleted in the database by hand. It reads every socket's session, so it is not made often.
CHAT_SESSION_CHECK_INTERVAL = env_float("CHAT_SESSION_CHECK_INTERVAL", 30)

# Mail (password resets): SMTP when EMAIL_HOST is set, else printed on stdout (the console
# backend), so a local run works without a mail server.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587 if env_bool("EMAIL_USE_TLS", True) else 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL") or "chat@localhost"

LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL") or "INFO"
# One JSON object per line on stdout (chatsite/logging.py): requests from
# chatsite.middleware, WebSocket connects and disconnects from chat.realtime.consumers.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "chatsite.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "chat": {"level": LOG_LEVEL},
        "chatsite": {"level": LOG_LEVEL},
        "daphne": {"level": LOG_LEVEL},
        "django": {"level": "INFO"},
    },
}
