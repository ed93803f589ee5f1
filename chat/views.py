import json
import logging
import math
import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import accounts, policy, redis_connections, selectors, services
from .forms import DeleteAccountForm, RoomForm, SignupForm, ThrottledPasswordChangeForm
from .realtime import protocol
from .realtime.protocol import ChatError, ErrorCode
from .shared_state import presence_key

logger = logging.getLogger(__name__)

# The longest search the lobby takes (room names are at most 80 characters).
MAX_QUERY = 80


# The lobby's orders: most recently active first (the default), or by name.
LOBBY_SORTS = ("active", "name")
# The deepest page the lobby serves (an offset beyond every room costs the database for nothing).
MAX_PAGE = 10_000


def _redis():
    return redis_connections.sync_client(timeout=1)


def online_counts(room_ids: list[int]) -> dict[int, int] | None:
    """How many people are in each room now, from the presence sets in Redis (one round trip).

    Each room's set maps a username to the expiry of their latest connection
    (chat.shared_state). None without Redis, or when Redis does not answer: show nothing.
    """
    if not redis_connections.configured():
        return None
    if not room_ids:
        return {}
    now = time.time()
    try:
        pipe = _redis().pipeline(transaction=False)
        for room_id in room_ids:
            pipe.zcount(presence_key(room_id), now, "+inf")
        counts = pipe.execute()
    except Exception as error:
        logger.warning("lobby: presence unavailable: %s", error)
        return None
    return dict(zip(room_ids, (int(n) for n in counts), strict=True))


def _page_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        return 1
    return min(max(number, 1), MAX_PAGE)


def _lobby(request: HttpRequest, form: RoomForm, status: int = 200) -> HttpResponse:
    """One page of the room directory: CHAT_LOBBY_PAGE_SIZE rooms, however many there are."""
    # PostgreSQL's text cannot hold NUL: `?q=%00` would be a 500.
    query = request.GET.get("q", "").replace("\x00", "").strip()[:MAX_QUERY]
    sort = request.GET.get("sort", "")
    sort = sort if sort in LOBBY_SORTS else LOBBY_SORTS[0]
    page = _page_number(request.GET.get("page", "1"))
    size = settings.CHAT_LOBBY_PAGE_SIZE
    # One row more than a page says whether there is a next page, without counting them all.
    rooms = list(
        selectors.lobby_rooms(policy.visible_rooms(request.user), request.user, query, sort)[
            (page - 1) * size : page * size + 1
        ]
    )
    has_next = len(rooms) > size
    rooms = rooms[:size]
    online = online_counts([room.pk for room in rooms])
    for room in rooms:
        room.online = None if online is None else online.get(room.pk, 0)

    def url(**changes) -> str:
        params = {"q": query, "sort": sort, "page": page} | changes
        defaults = {"q": "", "sort": LOBBY_SORTS[0], "page": 1}
        kept = {key: value for key, value in params.items() if value != defaults[key]}
        return reverse("chat:lobby") + (f"?{urlencode(kept)}" if kept else "")

    context = {
        "rooms": rooms,
        "form": form,
        "query": query,
        "sort": sort,
        "page": page,
        "this_url": url(),
        "first_url": url(page=1),
        "next_url": url(page=page + 1) if has_next and page < MAX_PAGE else None,
        "previous_url": url(page=page - 1) if page > 1 else None,
        "sort_urls": {choice: url(sort=choice, page=1) for choice in LOBBY_SORTS},
    }
    return render(request, "chat/lobby.html", context, status=status)


@login_required
@require_GET
def lobby(request: HttpRequest) -> HttpResponse:
    return _lobby(request, RoomForm())


# Refused room creations: the form again, with the error, and this status.
CREATE_ROOM_STATUS = {ErrorCode.RATE_LIMITED: 429, ErrorCode.UNAVAILABLE: 503}


@login_required
@require_POST
def create_room(request: HttpRequest) -> HttpResponse:
    form = RoomForm(request.POST)
    if not form.is_valid():
        return _lobby(request, form, status=400)
    try:
        room = services.create_room(name=form.cleaned_data["name"], created_by=request.user)
    except ChatError as error:
        # A bad or taken name is about the field; a limit is about the whole form.
        form.add_error("name" if error.code == ErrorCode.INVALID else None, error.detail)
        response = _lobby(request, form, status=CREATE_ROOM_STATUS.get(error.code, 400))
        if error.retry_after:
            response["Retry-After"] = str(math.ceil(error.retry_after))
        return response
    return redirect("chat:room", slug=room.slug)


@login_required
@require_GET
@ensure_csrf_cookie
def room(request: HttpRequest, slug: str) -> HttpResponse:
    # An archived room is gone for users: 404, as for a room that never was.
    room = policy.room_for(request.user, slug)
    if room is None:
        raise Http404("No such room.")
    last_read_id = selectors.last_read(request.user, room)
    context = {"room": room, "last_read_id": last_read_id, "max_body": settings.CHAT_MAX_BODY}
    return render(request, "chat/room.html", context)


@require_POST
def mark_read(request: HttpRequest, slug: str) -> JsonResponse:
    """`POST /rooms/<slug>/read` with `{"last_read_id": N}`: move the reader's marker forward.

    CSRF-protected (the page sends the csrftoken cookie's value as X-CSRFToken). Answers the
    marker as it stands: `{"last_read_id": N}`.
    """
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Log in first."}, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:  # unknown, or not visible to this user: the same answer
        return JsonResponse({"error": "No such room."}, status=404)
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    value = data.get("last_read_id") if isinstance(data, dict) else None
    # bool is an int in Python, not in JSON.
    if type(value) is not int or not 0 <= value <= protocol.MAX_ID:
        return JsonResponse(
            {"error": "Send a JSON object with last_read_id, a message id."}, status=400
        )
    marker = services.mark_read(user=request.user, room=room, message_id=value)
    return JsonResponse({"last_read_id": marker})


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("chat:lobby")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # Counted only when everything else is right: a typo costs nothing.
        wait = accounts.signup_wait(request)
        if wait:
            form.add_error(None, accounts.too_many("new accounts", wait))
            return render(request, "registration/signup.html", {"form": form}, status=429)
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat:lobby")
    return render(request, "registration/signup.html", {"form": form})


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, limited per address and per email address (chat.accounts)."""

    def form_valid(self, form):
        wait = accounts.password_reset_wait(self.request, form.cleaned_data["email"])
        if wait:
            form.add_error(None, accounts.too_many("password reset requests", wait))
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().form_valid(form)


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's, in the site's look, the old password checked by the login throttle."""

    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self):
        return super().get_form_kwargs() | {"request": self.request}

    def form_invalid(self, form):
        status = 429 if accounts.login_throttled_error(self.request) else 400
        return self.render_to_response(self.get_context_data(form=form), status=status)


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    return render(request, "registration/account.html")


@login_required
@require_http_methods(["GET", "POST"])
def delete_account(request: HttpRequest) -> HttpResponse:
    """Erase the account after the password is confirmed (services.delete_account)."""
    form = DeleteAccountForm(request.POST or None, request=request)
    if request.method == "POST" and form.is_valid():
        services.delete_account(user=request.user)
        logout(request)
        return render(request, "registration/account_deleted.html")
    status = 400 if form.errors else 200
    if accounts.login_throttled_error(request):
        status = 429
    return render(request, "registration/delete_account.html", {"form": form}, status=status)


def _channel_layer_ok() -> bool:
    if not redis_connections.configured():
        return True
    return bool(_redis().ping())


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    status = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        status["database"] = "ok"
    except Exception as error:
        logger.warning("healthz: database failed: %s", error)
        status["database"] = "unavailable"
    try:
        status["channel_layer"] = "ok" if _channel_layer_ok() else "unavailable"
    except Exception as error:
        logger.warning("healthz: channel layer failed: %s", error)
        status["channel_layer"] = "unavailable"
    healthy = all(value == "ok" for value in status.values())
    return JsonResponse(status, status=200 if healthy else 503)
