"""The smallest settings daphne needs to serve the tutorial consumer on Redis."""

import os

SECRET_KEY = "bench-tutorial-not-secret"  # no sessions, cookies or signing in this app
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["daphne", "channels"]
ASGI_APPLICATION = "bench.tutorial.asgi.application"
USE_TZ = True

# The tutorial's layer: RedisChannelLayer with its defaults (capacity 100, expiry 60).
# TUTORIAL_LAYER=pubsub tries the pub/sub flavour instead.
_backend = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}[os.environ.get("TUTORIAL_LAYER", "core")]
CHANNEL_LAYERS = {"default": {"BACKEND": _backend, "CONFIG": {"hosts": [os.environ["REDIS_URL"]]}}}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
