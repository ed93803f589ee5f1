import logging
import math

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache

from . import services, text
from .models import Room


def check_room_name(name: str) -> None:
    """Room names take no bidi controls, NUL or stacked marks (chat/text.py), wherever made."""
    problem = text.name_problem(name)
    if problem:
        raise forms.ValidationError(problem, code="invalid")


class RoomForm(forms.Form):
    name = forms.CharField(max_length=80, strip=True)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        check_room_name(name)
        slug = services.room_slug(name)
        if not slug:
            raise forms.ValidationError("A room name needs at least one letter or digit.")
        if (
            Room.objects.filter(name__iexact=name).exists()
            or Room.objects.filter(slug=slug).exists()
        ):
            raise forms.ValidationError("A room with this name already exists.")
        return name


logger = logging.getLogger(__name__)


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing further tries after repeated failures.

    Failures are counted per account and per client address over a window (in the cache, which
    is Redis when there is one, so every server process shares the counts).
    """

    def _keys(self) -> list[tuple[str, int]]:
        username = (self.data.get("username") or "").strip().lower()[:150]
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        return [
            (f"login-fail:user:{username}", settings.CHAT_LOGIN_FAILURES_PER_USER),
            (f"login-fail:addr:{address}", settings.CHAT_LOGIN_FAILURES_PER_ADDRESS),
        ]

    def clean(self):
        window = settings.CHAT_LOGIN_FAILURE_WINDOW
        for key, limit in self._keys():
            if (cache.get(key) or 0) >= limit:
                logger.warning("login throttled: %s", key.split(":", 2)[1])
                raise forms.ValidationError(
                    "Too many failed logins. Try again in %(minutes)s minutes.",
                    code="throttled",
                    params={"minutes": math.ceil(window / 60)},
                )
        try:
            return super().clean()
        except forms.ValidationError:
            for key, _ in self._keys():
                cache.add(key, 0, timeout=window)
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.set(key, 1, timeout=window)
            raise
