"""One log line per HTTP request (method, path, status and duration); the
Content-Security-Policy header; the site's 404 page for a view's 404, DEBUG or not."""

import logging
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import get_resolver, get_urlconf
from django.utils.deprecation import MiddlewareMixin

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


class ContentSecurityPolicyMiddleware:
    """Sets settings.CONTENT_SECURITY_POLICY on every response that has no policy of its own.

    connect-src also names the page's own WebSocket origin (ws:// or wss:// and the request's
    host): CSP Level 3 lets 'self' match it, but older browsers (Safari before 15.4) did not.
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
        return self.add_policy(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self.add_policy(request, await self.get_response(request))

    @staticmethod
    def add_policy(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy_for(request)
        return response


def policy_for(request: HttpRequest) -> str:
    directives = dict(settings.CONTENT_SECURITY_POLICY)
    try:
        host = request.get_host()
    except DisallowedHost:  # the 400 for a host not served: 'self' only
        host = None
    if host and "connect-src" in directives:
        scheme = "wss" if request.is_secure() else "ws"
        directives["connect-src"] = f"{directives['connect-src']} {scheme}://{host}"
    return "; ".join(f"{name} {value}" for name, value in directives.items())


class SiteNotFoundMiddleware(MiddlewareMixin):
    """A view that raises Http404 (a missing or archived room, say) answers with the site's own
    404 page (`handler404`, templates/404.html) even under DEBUG, where Django would show its
    debug page: `make run` is how people first try the site. An address that matches no URL
    pattern still gets Django's debug page (with the URL list) under DEBUG."""

    def process_exception(self, request: HttpRequest, exception: Exception):
        if not isinstance(exception, Http404):
            return None
        handler = get_resolver(get_urlconf()).resolve_error_handler(404)
        return handler(request, exception)
