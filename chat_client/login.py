"""Logging in through the site's HTTP login form, as a browser does."""

from __future__ import annotations

import html.parser
import http.client
import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .status import EXIT_ERROR, EXIT_LOGIN, EXIT_UNREACHABLE, Fatal

USER_AGENT = "chat-client/1"


class _FormInputs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "input":
            attributes = dict(attrs)
            name = attributes.get("name")
            if name:
                self.values.setdefault(name, attributes.get("value") or "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A successful login answers a redirect: keep it as the answer instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def login(server: str, username: str, password: str, timeout: float = 10) -> str:
    """Log in through the login form like a browser; return the `Cookie` header to send."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    url = f"{server}/accounts/login/"
    headers = {"User-Agent": USER_AGENT}
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as page:
            form = _FormInputs()
            form.feed(page.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as error:
        raise Fatal(
            f"Cannot reach {server}: {url} answered HTTP {error.code}.", EXIT_UNREACHABLE
        ) from None
    except (OSError, ValueError, http.client.HTTPException):
        raise Fatal(f"Cannot reach {server}", EXIT_UNREACHABLE) from None
    token = form.values.get("csrfmiddlewaretoken")
    if not token:
        raise Fatal(f"{url} shows no login form (no csrfmiddlewaretoken).", EXIT_ERROR)

    data = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token}
    ).encode()
    request = urllib.request.Request(url, data=data, headers={**headers, "Referer": url})
    try:
        with opener.open(request, timeout=timeout):
            # 200: the form again, with an error. A success is a redirect.
            redirected = False
    except urllib.error.HTTPError as error:
        if error.code not in (301, 302, 303, 307, 308):
            raise Fatal(
                f"Login failed: the server answered HTTP {error.code}.", EXIT_LOGIN
            ) from None
        redirected = True
    except (OSError, http.client.HTTPException):
        raise Fatal(f"Cannot reach {server}", EXIT_UNREACHABLE) from None
    cookies = {cookie.name: cookie.value for cookie in jar}
    if not redirected or not set(cookies) - {"csrftoken"}:
        raise Fatal("Login failed: wrong username or password.", EXIT_LOGIN)
    return "; ".join(f"{name}={value}" for name, value in cookies.items())
