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
import uuid
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
    *,
    raw: tuple[bytes, str] | None = None,
) -> dict[str, Any]:
    """`method path` with a JSON `body` (or `raw`: bytes and their Content-Type); the JSON object
    answered (200 or 201), or ApiError."""
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
    if raw is not None:
        data, headers["Content-Type"] = raw
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
    if status not in (200, 201):
        message = answer_data.get("error")
        raise ApiError(status, str(message) if message else f"refused (HTTP {status})")
    return answer_data


def upload(server: str, cookie: str, path: str, name: str, data: bytes) -> dict[str, Any]:
    """`POST path` with the file as the multipart field `file` (PROTOCOL.md §8): the
    Attachment, or ApiError."""
    boundary = f"chat-client-{uuid.uuid4().hex}"
    quoted = name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    return call(server, cookie, "POST", path, timeout=120, raw=(body, content_type))


def quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
