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


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


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
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers (several sockets posting at once) must wait for the lock, not fail.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
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

# Channel layer: Redis wherever more than one process runs; in-memory for a plain local run.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
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

# The cache holds login-failure counters: shared through Redis when there is one.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
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
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
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
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env_bool("DJANGO_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
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
CHAT_HISTORY_PAGE = 50
CHAT_HISTORY_MAX = 100
CHAT_RESUME_MAX_CHANGES = 1000
# Daphne's --websocket-max-message-size bounds frames both ways; it is 2 MiB (Makefile,
# Dockerfile), so a replay larger than this is not served (the client gets a fresh `ready`).
CHAT_MAX_REPLAY_BYTES = 1536 * 1024
CHAT_RATE_LIMIT_POSTS = env_int("CHAT_RATE_LIMIT_POSTS", 10)
CHAT_RATE_LIMIT_WINDOW = env_int("CHAT_RATE_LIMIT_WINDOW", 5)
# Edits and deletions (and every later state-changing frame) per user, all rooms, per window.
CHAT_RATE_LIMIT_CHANGES = env_int("CHAT_RATE_LIMIT_CHANGES", 20)
CHAT_RATE_LIMIT_CHANGES_WINDOW = env_int("CHAT_RATE_LIMIT_CHANGES_WINDOW", 10)
CHAT_TYPING_INTERVAL = 3
CHAT_RATE_LIMIT_HISTORY = env_int("CHAT_RATE_LIMIT_HISTORY", 30)
CHAT_RATE_LIMIT_HISTORY_WINDOW = env_int("CHAT_RATE_LIMIT_HISTORY_WINDOW", 10)
CHAT_MAX_SOCKETS_PER_USER = env_int("CHAT_MAX_SOCKETS_PER_USER", 20)
CHAT_LOGIN_FAILURES_PER_USER = env_int("CHAT_LOGIN_FAILURES_PER_USER", 5)
CHAT_LOGIN_FAILURES_PER_ADDRESS = env_int("CHAT_LOGIN_FAILURES_PER_ADDRESS", 20)
CHAT_LOGIN_FAILURE_WINDOW = env_int("CHAT_LOGIN_FAILURE_WINDOW", 300)
CHAT_PRESENCE_TTL = env_int("CHAT_PRESENCE_TTL", 45)
# Presence in a crowd (chat/hub.py): up to CHAT_PRESENCE_BURST presence frames per
# CHAT_PRESENCE_WINDOW seconds go out at once; joins and leaves beyond that wait for the window's
# end and go out together as one frame with the new online list (a reconnect storm of 1,000 users
# would otherwise send each of them 1,000 frames of up to 13 KB).
CHAT_PRESENCE_WINDOW = float(os.environ.get("CHAT_PRESENCE_WINDOW", "0.25"))
CHAT_PRESENCE_BURST = env_int("CHAT_PRESENCE_BURST", 3)
# How often a process compares each of its rooms' cursors with the database, in case the channel
# layer lost a doorbell (slow reader, Redis restart).
CHAT_RESYNC_INTERVAL = float(os.environ.get("CHAT_RESYNC_INTERVAL", "2"))

# How often each process checks that its sockets' sessions still stand (logout, password
# change, expiry, deactivation close them with 4401).
CHAT_SESSION_CHECK_INTERVAL = float(os.environ.get("CHAT_SESSION_CHECK_INTERVAL", "3"))

LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL", "INFO")
# One JSON object per line on stdout (chatsite/logging.py): requests from
# chatsite.middleware, WebSocket connects and disconnects from chat.consumers.
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
