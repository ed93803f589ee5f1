"""One log line per HTTP request: method, path, status and duration."""

import logging
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger("chatsite.request")

# Docker's and the proxy's health probes arrive every few seconds: logged at DEBUG only.
QUIET_PATHS = frozenset({"/healthz"})


class RequestLogMiddleware:
    """Outermost middleware, so the duration covers everything Django does for the request.

    Sync and async capable: under daphne it stays on the event loop (no thread hop per request).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        log_request(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = await self.get_response(request)
        log_request(request, response, started)
        return response


def log_request(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
    status = response.status_code
    if request.path in QUIET_PATHS and status == 200:
        level = logging.DEBUG
    elif status >= 500:
        level = logging.WARNING
    else:
        level = logging.INFO
    if not logger.isEnabledFor(level):
        return
    # The path without its query string: queries may carry tokens that do not belong in logs.
    logger.log(
        level,
        "%s %s %s",
        request.method,
        request.path,
        status,
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "client": request.META.get("REMOTE_ADDR", ""),
        },
    )
