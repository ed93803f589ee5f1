"""The rules for accounts that every door follows: logging in, signing up, resetting a password.

- **One login throttle.** Every password check in Django goes through
  `django.contrib.auth.authenticate()`, whichever door asks (the site's login form, the admin's,
  the account-deletion page, any later API). `LoginThrottleBackend` stands first in
  AUTHENTICATION_BACKENDS and refuses while an account or an address has too many recent
  failures; failures are counted from Django's `user_login_failed` signal, which `authenticate()`
  sends for every door. A door cannot forget the throttle, and the session's backend stays
  Django's `ModelBackend` (existing sessions keep working). The counter keys on the username as
  Django compares it (NFKC) and case-folded, so fullwidth or mathematical-bold spellings of
  `dave`, and `Dave`, all count for `dave`.
- **Sign-ups and password resets** are limited per address (and resets per email address).
- **Usernames** may not hold bidi controls or invisible characters, may not take the reserved
  prefix of erased accounts, and may not look like an existing name (Unicode TR39 skeleton,
  case-insensitive).

The limits use `chat.throttle` (Redis sliding windows shared by every process). When Redis does
not answer, the limits are skipped with a warning: the site is down for chat then anyway, and
logging in must not turn into a 500.
"""

import hashlib
import logging
import math
import unicodedata
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.contrib.auth.signals import user_logged_out, user_login_failed
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest

from . import throttle

logger = logging.getLogger(__name__)

# Erased accounts are renamed `deleted-<hex>` (services.delete_account); nobody may sign up
# with the prefix, so a name that starts with it is always an erased account.
DELETED_PREFIX = "deleted-"


def client_address(request: HttpRequest | None) -> str:
    """The client's address (daphne puts the proxy's X-Forwarded-For here with --proxy-headers)."""
    if request is None:
        return ""
    return request.META.get("REMOTE_ADDR", "") or ""


def canonical_username(username: str) -> str:
    """The name as Django compares it (NFKC), case-folded: one key for all its spellings."""
    return unicodedata.normalize("NFKC", username).casefold()


def _digest(value: str) -> str:
    # Keys of bounded length and plain ASCII, whatever was typed.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


def _fail_open(what: str, call, *args) -> float:
    try:
        return call(*args)
    except Exception as error:  # Redis unreachable: no limit rather than a 500
        logger.warning("%s: limit not applied, Redis failed: %s", what, error)
        return 0.0


# --- the login throttle ----------------------------------------------------------------------


def _login_limits(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    limits = [
        (
            f"login-fail:user:{_digest(canonical_username(username))}",
            settings.CHAT_LOGIN_FAILURES_PER_USER,
        )
    ]
    address = client_address(request)
    if address:
        limits.append((f"login-fail:addr:{address}", settings.CHAT_LOGIN_FAILURES_PER_ADDRESS))
    return limits


def login_wait(request: HttpRequest | None, username: str) -> float:
    """Seconds until this account may try again from this address; 0 when it may now."""
    window = settings.CHAT_LOGIN_FAILURE_WINDOW
    waits = [
        _fail_open("login throttle", throttle.peek, key, limit, window)
        for key, limit in _login_limits(request, username)
    ]
    return max(waits)


def record_login_failure(request: HttpRequest | None, username: str) -> None:
    window = settings.CHAT_LOGIN_FAILURE_WINDOW
    for key, limit in _login_limits(request, username):
        _fail_open("login throttle", throttle.hit, key, limit, window)


class LoginThrottled(PermissionDenied):
    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many failed logins.")
        self.retry_after = retry_after


class LoginThrottleBackend(BaseBackend):
    """First in AUTHENTICATION_BACKENDS: refuses a password check while the limit stands.

    Raising PermissionDenied makes `authenticate()` stop without asking the next backend, so the
    right password is refused too. It grants no permissions; it finds a session's user as
    ModelBackend does, because `force_login` and `login` without a backend name the first one.
    """

    def get_user(self, user_id):
        return ModelBackend().get_user(user_id)

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        wait = login_wait(request, str(username))
        if wait:
            logger.warning("login throttled", extra={"client": client_address(request)})
            if request is not None:
                request.login_throttled = wait  # for the form's message; not a new failure
            raise LoginThrottled(wait)
        return None


@receiver(user_login_failed, dispatch_uid="chat.accounts.count_login_failure")
def _count_login_failure(sender, credentials, request=None, **kwargs) -> None:
    if getattr(request, "login_throttled", 0):
        return  # refused before the password was checked: not another guess
    username = credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username")
    if username is not None:
        record_login_failure(request, str(username))


def login_throttled_error(request: HttpRequest | None) -> ValidationError | None:
    """The error a login form shows when the throttle refused this request, else None."""
    wait = getattr(request, "login_throttled", 0)
    if not wait:
        return None
    return ValidationError(
        "Too many failed logins. Try again in %(minutes)s minutes.",
        code="throttled",
        params={"minutes": _minutes(wait)},
    )


# --- sign-up and password reset limits -------------------------------------------------------


def signup_wait(request: HttpRequest) -> float:
    """Count one account created from this address: 0 when allowed, else seconds to wait."""
    return _fail_open(
        "signup limit",
        throttle.hit,
        f"signup:addr:{client_address(request)}",
        settings.CHAT_SIGNUPS_PER_ADDRESS,
        settings.CHAT_SIGNUP_WINDOW,
    )


def password_reset_wait(request: HttpRequest, email: str) -> float:
    """Count one reset request from this address for this email: 0 when allowed, else the wait.

    The email's count does not depend on whether an account has it, so the answer tells nothing.
    """
    window = settings.CHAT_PASSWORD_RESET_WINDOW
    wait = _fail_open(
        "password reset limit",
        throttle.hit,
        f"reset:addr:{client_address(request)}",
        settings.CHAT_PASSWORD_RESETS_PER_ADDRESS,
        window,
    )
    if wait:
        return wait
    return _fail_open(
        "password reset limit",
        throttle.hit,
        f"reset:email:{_digest(email.strip().casefold())}",
        settings.CHAT_PASSWORD_RESETS_PER_EMAIL,
        window,
    )


def too_many(what: str, wait: float) -> ValidationError:
    return ValidationError(
        "Too many %(what)s from your address. Try again in %(minutes)s minutes.",
        code="throttled",
        params={"what": what, "minutes": _minutes(wait)},
    )


# --- usernames -------------------------------------------------------------------------------

# Right-to-left and left-to-right marks, embeddings, overrides and isolates.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Letters that draw nothing (Hangul fillers, Braille blank), the combining grapheme joiner.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")


def _invisible(char: str) -> bool:
    # Cf: zero-width spaces and joiners, soft hyphen, BOM, tags; Cc/Zs/Zl/Zp: controls, spaces.
    return (
        char in BLANK_LETTERS
        or unicodedata.category(char) in {"Cf", "Cc", "Zs", "Zl", "Zp"}
        or 0xFE00 <= ord(char) <= 0xFE0F  # variation selectors
        or 0xE0100 <= ord(char) <= 0xE01EF
    )


def check_username_characters(username: str) -> None:
    """Refuse bidi controls and characters that draw nothing (they let a name pass for another)."""
    if any(char in BIDI_CONTROLS for char in username):
        raise ValidationError(
            "A username may not contain right-to-left or left-to-right control characters.",
            code="bidi",
        )
    if any(_invisible(char) for char in username):
        raise ValidationError(
            "A username may not contain invisible characters or spaces.", code="invisible"
        )


@cache
def _prototypes() -> dict[str, str]:
    """Unicode's confusables.txt (TR39) as character → prototype, from confusable-homoglyphs.

    That package keeps each line in both directions (a source lists its one prototype, a
    prototype lists its sources) and wraps right-to-left characters in marks for display.
    Sources are single characters and prototypes are never sources, so a single character with
    one entry whose entry lists several is a source. Where a source and a prototype list only
    each other, both map to the smaller of the two, which makes the same classes.
    """
    from confusable_homoglyphs.confusables import confusables_data

    def bare(text: str) -> str:
        return text.replace("\u200e", "").replace("\u200f", "")

    table: dict[str, list[str]] = {}
    for key, entries in confusables_data.items():
        table.setdefault(bare(key), []).extend(bare(entry["c"]) for entry in entries)
    prototypes = {}
    for key, others in table.items():
        if len(key) != 1 or len(others) != 1:
            continue
        other = others[0]
        if len(other) != 1 or len(table.get(other, ())) > 1:
            prototypes[key] = other
        else:
            prototypes[key] = min(key, other)
    return prototypes


def skeleton(username: str) -> str:
    """TR39's skeleton of the case-folded name: two names that look alike have the same one."""
    text = unicodedata.normalize("NFD", canonical_username(username))
    table = _prototypes()
    text = "".join(table.get(char, char) for char in text)
    return unicodedata.normalize("NFD", text).casefold()


def check_username_available(username: str, *, exclude_user_id: int | None = None) -> None:
    """Refuse the reserved prefix and names that look like an existing one."""
    from .models import UsernameSkeleton

    if canonical_username(username).startswith(DELETED_PREFIX):
        raise ValidationError(
            "Usernames starting with “%(prefix)s” are reserved.",
            code="reserved",
            params={"prefix": DELETED_PREFIX},
        )
    taken = UsernameSkeleton.objects.filter(skeleton=skeleton(username))
    if exclude_user_id is not None:
        taken = taken.exclude(user_id=exclude_user_id)
    if taken.exists():
        raise ValidationError(
            "This username looks too much like an existing one. Choose another.",
            code="confusable",
        )


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat.accounts.skeleton")
def _keep_skeleton(sender, instance, raw=False, **kwargs) -> None:
    """Every way a name is set (sign-up, admin, shell, erasure) keeps the look-alike index right."""
    from .models import UsernameSkeleton

    update_fields = kwargs.get("update_fields")
    if raw or (update_fields is not None and sender.USERNAME_FIELD not in update_fields):
        return  # a login's last_login, say
    value = skeleton(instance.get_username())
    UsernameSkeleton.objects.update_or_create(user_id=instance.pk, defaults={"skeleton": value})


# --- open sockets follow their sessions at once --------------------------------------------------


def sessions_changed(user_id: int) -> None:
    """After the commit: every process checks this user's open sockets against their sessions
    now (chat.realtime.sessions), not at its next periodic check, which remains for what no
    signal tells (a session deleted in the database by hand, or expiring)."""
    from .realtime import events

    transaction.on_commit(lambda: events.publish_now(events.SessionsChanged(user=user_id)))


@receiver(user_logged_out, dispatch_uid="chat.accounts.logged_out")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None and user.pk is not None:
        sessions_changed(user.pk)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat.accounts.sessions")
def _account_saved(sender, instance, created=False, raw=False, **kwargs) -> None:
    """A password change or deactivation ends the user's sessions (Django's session auth hash,
    `is_active`); any other save costs one check of that user's sockets, nothing more."""
    update_fields = kwargs.get("update_fields")
    if raw or created or (update_fields is not None and set(update_fields) == {"last_login"}):
        return
    sessions_changed(instance.pk)
