"""A small HTTP client for tests against real server processes: a browser, as far as HTTP goes.

Cookies are kept, redirects are not followed (tests look at them), and form posts carry the CSRF
token and the Origin a browser would send.
"""

import http.cookiejar
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

from django.conf import settings


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            urllib.request.HTTPSHandler(context=ssl_context),
            NoRedirect(),
        )

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def cookie_is_secure(self, name: str) -> bool:
        return next(c.secure for c in self.jar if c.name == name)

    @property
    def session(self) -> str | None:
        return self.cookie(settings.SESSION_COOKIE_NAME)

    def request(
        self, path: str, form: dict[str, str] | None = None, *, timeout: float = 60
    ) -> tuple[int, dict[str, str], bytes]:
        """GET `path`, or POST `form` to it with the CSRF token: status, headers, body."""
        data = None
        headers = {}
        if form is not None:
            token = self.cookie(settings.CSRF_COOKIE_NAME)
            data = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": token}).encode()
            headers = {"Origin": self.base_url, "Referer": f"{self.base_url}{path}"}
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, headers=headers)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def get(self, path: str) -> int:
        return self.request(path)[0]

    def post(self, path: str, **form: str) -> int:
        return self.request(path, form)[0]

    def log_in(self, username: str, password: str, path: str = "/accounts/login/") -> None:
        status, _, page = self.request(path)
        assert status == 200, status
        # The form's token, in case the page set no cookie of its own yet.
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match, page[:500]
        status, headers, _ = self.request(path, {"username": username, "password": password})
        assert status == 302 and self.session, f"not logged in: {status} {headers}"
