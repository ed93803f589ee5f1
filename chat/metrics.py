"""Prometheus metrics of one server process, served on a port of their own (CHAT_METRICS_PORT).

Not on the site's port: nginx spreads requests over the replicas, so a scrape through it would
read a random process, and metrics are not for the public. Each process listens on
CHAT_METRICS_ADDR:CHAT_METRICS_PORT (compose: every web container on its internal network,
unpublished); Prometheus scrapes each replica. Off unless CHAT_METRICS_PORT is set.

The counters are cheap enough for the hot path (one lock-protected add each); frames sent are
added once per socket per delivery, not once per frame.
"""

import logging
import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

OPEN_SOCKETS = Gauge("chat_open_sockets", "Room WebSockets open on this process")
POSTS_STORED = Counter("chat_posts_stored_total", "Messages stored by this process")
FRAMES_SENT = Counter(
    "chat_frames_sent_total", "Change, presence and typing frames sent to sockets"
)
GAP_FILLS = Counter(
    "chat_gap_fills_total", "Changes read from the database because a doorbell skipped cursors"
)
INBOX_READS = Counter(
    "chat_inbox_reads_total", "Queries reading inbox summaries (one per due batch, §5)"
)
RESYNC_FILLS = Counter(
    "chat_resync_fills_total", "Rooms brought up to date by the resync tick (a doorbell lost)"
)
HUB_LAG = Histogram(
    "chat_hub_lag_seconds",
    "From a change's commit to this process's hub receiving its doorbell",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REDIS_ERRORS = Counter(
    "chat_redis_errors_total", "Redis or channel-layer calls that failed", ["operation"]
)
DATABASE_ERRORS = Counter("chat_database_errors_total", "Database calls that failed", ["where"])

_started = False


def serve_from_environment() -> int | None:
    """Start the metrics endpoint if CHAT_METRICS_PORT is set (once per process); its port."""
    global _started
    port = os.environ.get("CHAT_METRICS_PORT", "").strip()
    if not port or _started:
        return None
    addr = os.environ.get("CHAT_METRICS_ADDR", "").strip() or "127.0.0.1"
    start_http_server(int(port), addr=addr)
    _started = True
    logger.info("metrics on http://%s:%s/metrics", addr, port)
    return int(port)
