import datetime
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
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import accounts, attachments, policy, redis_connections, selectors, services
from .forms import DeleteAccountForm, RoomForm, SignupForm, ThrottledPasswordChangeForm
from .models import Room, RoomRestriction
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
    directory = policy.visible_rooms(request.user).filter(kind=Room.Kind.PUBLIC)
    listed = selectors.lobby_rooms(directory, request.user, query, sort)
    listed = policy.mark_banned(listed, request.user)
    rooms = list(listed[(page - 1) * size : page * size + 1])
    has_next = len(rooms) > size
    rooms = rooms[:size]
    mine = my_rooms(request.user)
    online = online_counts([room.pk for room in rooms + mine])
    for room in rooms + mine:
        room.online = None if online is None else online.get(room.pk, 0)

    def url(**changes) -> str:
        params = {"q": query, "sort": sort, "page": page} | changes
        defaults = {"q": "", "sort": LOBBY_SORTS[0], "page": 1}
        kept = {key: value for key, value in params.items() if value != defaults[key]}
        return reverse("chat:lobby") + (f"?{urlencode(kept)}" if kept else "")

    context = {
        "rooms": rooms,
        "my_rooms": mine,
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


# The most rooms of their own a user sees listed in the lobby (the newest activity first).
MY_ROOMS_MAX = 200
KIND_ORDER = {Room.Kind.DIRECT: 0, Room.Kind.PRIVATE: 0, Room.Kind.PUBLIC: 1}


def my_rooms(user) -> list[Room]:
    """The user's rooms for the lobby: direct and private first, then joined public rooms, each
    group most recently active first; each with `unread`, `last_activity` and `display_name`."""
    listed = policy.mark_banned(selectors.lobby_rooms(policy.member_rooms(user), user), user)
    rooms = list(listed[:MY_ROOMS_MAX])
    rooms.sort(key=lambda room: KIND_ORDER[room.kind])  # stable: activity order stays
    names = selectors.direct_names(rooms, user)
    for room in rooms:
        room.display_name = names.get(room.pk, room.name)
    return rooms


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
        room = services.create_room(
            name=form.cleaned_data["name"],
            created_by=request.user,
            kind=form.cleaned_data["kind"] or Room.Kind.PUBLIC,
            topic=form.cleaned_data["topic"],
        )
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
    access = policy.access(request.user, room)
    # A ban or mute in force, with its reason and end: one more query, only when there is one.
    in_force = policy.restrictions_in_force(request.user, room) if access.restrictions else {}
    if access.can_read() == policy.Denial.BANNED:
        # The room exists for them (they saw it), so say why they cannot read it, in the site's
        # look, and lead back to their rooms; the socket would close 4403 anyway.
        context = {
            "room": room,
            "seen_as": selectors.room_object(room, request.user),
            "ban": in_force.get(RoomRestriction.Kind.BAN),
        }
        return render(request, "chat/banned.html", context, status=403)
    # A permalink (§6 `?message=<id>`): the page opens at that message, loading the history
    # around it. An id that is not a number is ignored; one not in the room, the page says so.
    target = request.GET.get("message", "")
    context = {
        "room": room,
        "seen_as": selectors.room_object(room, request.user),
        "role": access.role or "",
        # Per-room moderation (owners of a private room hide messages) and reports (§9).
        "can_hide": access.can_read() is None and access.moderates_room,
        # Earlier versions of every message (the author sees their own anyway).
        "sees_versions": access.can_read() is None and access.moderates_messages,
        "reported_ids": selectors.reported_ids(request.user, room),
        "reports_handled": services.take_report_notices(user=request.user),
        "last_read_id": selectors.last_read(request.user, room),
        "max_body": settings.CHAT_MAX_BODY,
        # Shown in place of the composer (PROTOCOL.md §3 `muted`), before any post bounces.
        "mute": in_force.get(RoomRestriction.Kind.MUTE)
        if access.can_post() == policy.Denial.MUTED
        else None,
        "max_upload": settings.CHAT_MAX_UPLOAD_BYTES,  # the upload tray's limit (§8)
        "target_message": int(target) if target.isascii() and target.isdigit() else "",
    }
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


# --- the JSON doors of PROTOCOL.md §4: members, direct rooms, and the people and room lookups ---
# Each asks the policy through a service, is rate limited there, needs a login (401, never a
# redirect) and, for POST and DELETE, the CSRF header (403, Django's middleware).

# A refusal's HTTP status when the policy did not name one.
STATUS_BY_CODE = {
    ErrorCode.INVALID: 400,
    ErrorCode.EMPTY: 400,
    ErrorCode.TOO_LONG: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.MUTED: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


def json_error(error: ChatError) -> JsonResponse:
    response = JsonResponse(
        {"error": error.detail, "code": str(error.code)},
        status=error.status or STATUS_BY_CODE.get(error.code, 400),
    )
    if error.retry_after:
        response["Retry-After"] = str(math.ceil(error.retry_after))
    return response


NOT_LOGGED_IN = {"error": "Log in first."}
NO_SUCH_ROOM = {"error": "No such room."}


def _json_body(request: HttpRequest) -> dict | None:
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, slug: str) -> JsonResponse:
    """`GET /rooms/<slug>/members`: who is in the room. `POST` `{"username": U}`: add U to a
    private room, or join a public one (U is yourself)."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:
        return JsonResponse(NO_SUCH_ROOM, status=404)
    try:
        if request.method == "GET":
            # Only readers see who is in a room (§4: 404 otherwise, a ban included).
            if policy.access(request.user, room).can_read() is not None:
                return JsonResponse(NO_SUCH_ROOM, status=404)
            return JsonResponse({"members": selectors.members(room)})
        data = _json_body(request)
        username = data.get("username") if data is not None else None
        if not isinstance(username, str):
            return JsonResponse({"error": 'Send {"username": U}.'}, status=400)
        listed = services.add_member(room=room, by=request.user, username=username)
    except ChatError as error:
        return json_error(error)
    return JsonResponse({"members": listed})


@require_http_methods(["DELETE"])
def member(request: HttpRequest, slug: str, username: str) -> JsonResponse:
    """`DELETE /rooms/<slug>/members/<username>`: an owner removes someone, or you leave."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:
        return JsonResponse(NO_SUCH_ROOM, status=404)
    try:
        listed = services.remove_member(room=room, by=request.user, username=username)
    except ChatError as error:
        return json_error(error)
    return JsonResponse({"members": listed})


def _restriction(row: RoomRestriction | None) -> dict | None:
    if row is None:
        return None
    return {"reason": row.reason, "until": protocol.iso(row.until)}


@require_GET
def restrictions(request: HttpRequest, slug: str) -> JsonResponse:
    """`GET /rooms/<slug>/restrictions`: the caller's own ban and mute in force in the room,
    `{"ban": null | {"reason", "until"}, "mute": ...}` (`until` ISO or null: until lifted). The
    room page asks when it shows a mute and reconnects, or when a post bounces `muted`."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:
        return JsonResponse(NO_SUCH_ROOM, status=404)
    in_force = policy.restrictions_in_force(request.user, room)
    return JsonResponse(
        {kind: _restriction(in_force.get(kind)) for kind in RoomRestriction.Kind.values}
    )


@require_POST
def hide(request: HttpRequest, slug: str, message_id: int) -> JsonResponse:
    """`POST /rooms/<slug>/messages/<id>/hide`: an owner of a private room hides a message there
    (optional `{"reason": ...}` for the audit log). Answers the message as it now stands."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:
        return JsonResponse(NO_SUCH_ROOM, status=404)
    data = _json_body(request) if request.body else {}
    reason = data.get("reason", "") if data is not None else None
    if not isinstance(reason, str):
        return JsonResponse({"error": 'Send {"reason": "..."} or nothing.'}, status=400)
    try:
        message = services.hide_in_room(
            room=room, message_id=message_id, by=request.user, reason=reason
        )
    except ChatError as error:
        return json_error(error)
    return JsonResponse({"message": protocol.message_object(message)})


@require_GET
def versions(request: HttpRequest, slug: str, message_id: int) -> JsonResponse:
    """`GET /rooms/<slug>/messages/<id>/versions`: the texts a message has had, oldest first,
    the current one last, `{"versions": [{"body", "html", "at"}]}`: for its author and the
    room's moderators while it is not deleted; 404 for anyone else."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:
        return JsonResponse(NO_SUCH_ROOM, status=404)
    try:
        found = services.read_versions(room=room, message_id=message_id, by=request.user)
    except ChatError as error:
        return json_error(error)
    listed = [
        {"body": version.body, "html": version.html, "at": protocol.iso(version.at)}
        for version in found
    ]
    return JsonResponse({"versions": listed})


@require_POST
def notifications(request: HttpRequest, slug: str) -> JsonResponse:
    """`POST /rooms/<slug>/notifications` `{"level": "all" | "mentions" | "none"}`: which
    messages of this room notify you, on every device (the inbox's `notifications` field)."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:
        return JsonResponse(NO_SUCH_ROOM, status=404)
    data = _json_body(request)
    if data is None or "level" not in data:
        return JsonResponse({"error": 'Send {"level": "all" | "mentions" | "none"}.'}, status=400)
    try:
        level = services.set_notifications(room=room, user=request.user, level=data["level"])
    except ChatError as error:
        return json_error(error)
    return JsonResponse({"level": level})


class SearchRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def _search_filters(request: HttpRequest) -> dict:
    """The filters of a search request (§7, plus the page's dates and `has=link`), or
    SearchRefused with the status and sentence for a bad one."""
    params = request.GET
    filters: dict = {"query": params.get("q", "").replace("\x00", "")}
    if not filters["query"].strip():
        raise SearchRefused(400, "Type something to search for.")
    slug = params.get("room")
    if slug:
        room = policy.room_for(request.user, slug)
        if room is None:
            raise SearchRefused(404, NO_SUCH_ROOM["error"])
        filters["room"] = room
    filters["author"] = params.get("from", "").strip()[:150] or None
    before = params.get("before")
    if before:
        if not before.isdigit() or int(before) > protocol.MAX_ID:
            raise SearchRefused(400, "before is a message id.")
        filters["before"] = int(before)
    for field, name in (("after", "after_time"), ("until", "until_time")):
        value = params.get(field)
        if value:
            try:
                day = datetime.date.fromisoformat(value)
            except ValueError:
                raise SearchRefused(400, f"{field} is a date, YYYY-MM-DD.") from None
            if field == "until":
                day += datetime.timedelta(days=1)  # through the end of that day
            filters[name] = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)
    has = params.getlist("has")
    filters["has_link"] = "link" in has
    filters["has_file"] = "file" in has
    return filters


@require_GET
def search(request: HttpRequest) -> JsonResponse:
    """`GET /api/search?q=TEXT[&room=SLUG][&from=USERNAME][&before=ID]` (§7), plus the search
    page's filters `after`/`until` (dates) and `has=link`."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    try:
        page = services.search_messages(user=request.user, **_search_filters(request))
    except SearchRefused as refused:
        return JsonResponse({"error": refused.detail}, status=refused.status)
    except ChatError as error:
        return json_error(error)
    return JsonResponse({"results": page.results, "has_more": page.has_more})


@login_required
@require_GET
def search_page(request: HttpRequest) -> HttpResponse:
    """`/search?q=...`: the search page, through the same service as the API; each result opens
    its room at the message (the permalink)."""
    context: dict = {
        "q": request.GET.get("q", ""),
        "params": request.GET,
        "has": request.GET.getlist("has"),
        "rooms": [
            {"slug": room.slug, "name": room.display_name} for room in my_rooms(request.user)
        ],
        "results": None,
    }
    status = 200
    if context["q"].strip():
        try:
            page = services.search_messages(user=request.user, **_search_filters(request))
        except SearchRefused as refused:
            context["error"], status = refused.detail, refused.status
        except ChatError as error:
            context["error"] = error.detail
            status = error.status or STATUS_BY_CODE.get(error.code, 400)
        else:
            context["results"] = page.results
            for result in page.results:
                created = result["message"]["created"] or ""
                result["when"] = created[:16].replace("T", " ") + " UTC"
            if page.has_more and page.results:
                older = request.GET.copy()
                older["before"] = page.results[-1]["message"]["id"]
                context["older"] = older.urlencode()
    return render(request, "chat/search.html", context, status=status)


@require_POST
def direct(request: HttpRequest) -> JsonResponse:
    """`POST /direct` `{"usernames": [...]}`: the direct room of exactly those people and you."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    data = _json_body(request)
    try:
        room = services.open_direct(
            by=request.user, usernames=data.get("usernames") if data is not None else None
        )
    except ChatError as error:
        return json_error(error)
    return JsonResponse({"slug": room.slug})


# The type-ahead's answer: at most this many usernames.
USER_LOOKUP_MAX = 10


@require_GET
def users(request: HttpRequest) -> JsonResponse:
    """`GET /api/users?q=PREFIX`: active usernames starting with PREFIX (case-insensitive), for
    the type-ahead of "add people" and "new direct message". A name only, nothing else."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    query = request.GET.get("q", "").replace("\x00", "").strip()[:150]
    try:
        names = services.find_usernames(by=request.user, prefix=query, limit=USER_LOOKUP_MAX)
    except ChatError as error:
        return json_error(error)
    return JsonResponse({"users": names})


@require_GET
def rooms(request: HttpRequest) -> JsonResponse:
    """`GET /api/rooms`: the user's rooms (direct and private first, then joined public), each
    `{slug, name, kind, topic, unread, last_activity}`, for the terminal client's `/rooms`."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    listed = [
        {
            "slug": room.slug,
            "name": room.display_name,
            "kind": room.kind,
            "topic": room.topic,
            "unread": room.unread,
            "last_activity": protocol.iso(room.last_activity),
        }
        for room in my_rooms(request.user)
    ]
    return JsonResponse({"rooms": listed})


# --- files (PROTOCOL.md §8) ---------------------------------------------------------------------

# What a multipart body may add to the file itself (boundaries, the part's headers, the CSRF
# field) before its Content-Length alone says it is too large.
MULTIPART_SLACK = 64 * 1024


@require_POST
def upload(request: HttpRequest, slug: str) -> JsonResponse:
    """`POST /rooms/<slug>/uploads`, multipart with the field `file` (and the CSRF header): 201
    with the Attachment, for a `post` to attach. 413 over CHAT_MAX_UPLOAD_BYTES or past the
    user's quota, 400 for an empty file, 404 for a room the user cannot see."""
    if not request.user.is_authenticated:
        return JsonResponse(NOT_LOGGED_IN, status=401)
    room = policy.room_for(request.user, slug)
    if room is None:
        return JsonResponse(NO_SUCH_ROOM, status=404)
    try:
        # Refused by its declared length before Django parses (and spools) the body.
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        attachments.check_size(max(1, declared - MULTIPART_SLACK))
        file = request.FILES.get("file")
        if file is None:
            return JsonResponse(
                {"error": "Send the file as the multipart field `file`."}, status=400
            )
        attachment = services.upload_attachment(room=room, by=request.user, file=file)
    except ChatError as error:
        return json_error(error)
    except ValueError:  # a Content-Length that is not a number
        return JsonResponse({"error": "Bad Content-Length."}, status=400)
    return JsonResponse(protocol.attachment_object(attachment), status=201)


@require_GET
def file(request: HttpRequest, attachment_id: int, name: str = "") -> HttpResponseBase:
    """`GET /files/<id>/<name>` (and `/files/thumbnails/<id>`, an image's thumbnail): the bytes,
    for whoever the policy lets read the file; 404 for anyone else, logged in or not. The name
    is for the reader's eyes and their browser's save dialog: the id alone finds the file."""
    return _serve_file(request, attachment_id, thumbnail=False)


@require_GET
def thumbnail(request: HttpRequest, attachment_id: int) -> HttpResponseBase:
    return _serve_file(request, attachment_id, thumbnail=True)


def _serve_file(request: HttpRequest, attachment_id: int, *, thumbnail: bool) -> HttpResponseBase:
    try:
        download = attachments.download_for(
            user=request.user, attachment_id=attachment_id, thumbnail=thumbnail
        )
        return attachments.response_for(download)
    except attachments.NotFound:
        raise Http404("No such file.") from None
