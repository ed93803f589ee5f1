"""The site's JSON doors (docs/protocol.md §4): rooms, members, direct conversations.

Requests carry the session cookie from logging in; `POST` and `DELETE` also carry the
`X-CSRFToken` header with the `csrftoken` cookie's value, as the page does. Blocking (urllib):
the room runs them in a thread.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .login import USER_AGENT

CSRF_COOKIE = "csrftoken"


class ApiError(Exception):
    """A request the server refused (`status`, its `error` sentence) or could not be made
    (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def cookie_value(cookie_header: str, name: str) -> str:
    for part in cookie_header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def call(
    server: str,
    cookie: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    """`method path` with a JSON `body`; the JSON object answered, or ApiError."""
    headers = {
        "User-Agent": USER_AGENT,
        "Cookie": cookie,
        "Accept": "application/json",
        # Django checks the Referer of a CSRF-protected request over HTTPS.
        "Referer": f"{server}/",
    }
    data = None
    if method != "GET":
        headers["X-CSRFToken"] = cookie_value(cookie, CSRF_COOKIE)
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"{server}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (OSError, ValueError, http.client.HTTPException):
        raise ApiError(0, f"cannot reach {server}") from None
    try:
        answer_data = json.loads(raw)
    except ValueError:
        answer_data = None
    if not isinstance(answer_data, dict):
        raise ApiError(status, f"the server answered HTTP {status} without JSON")
    if status != 200:
        message = answer_data.get("error")
        raise ApiError(status, str(message) if message else f"refused (HTTP {status})")
    return answer_data


def quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
