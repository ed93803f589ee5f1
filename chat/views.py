import json
import logging
import time
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import IntegrityError, connection
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import services
from .forms import RoomForm
from .models import Message, ReadMarker, Room
from .shared_state import presence_key

logger = logging.getLogger(__name__)

# The longest search the lobby takes (room names are at most 80 characters).
MAX_QUERY = 80


def lobby_rooms(user, query: str = ""):
    """Rooms (matching `query`) with `unread` for `user` and `last_activity`, in one query.

    Unread: messages not deleted, by someone else, after the user's read marker in that room
    (no marker: every such message).
    """
    marker = ReadMarker.objects.filter(room=OuterRef(OuterRef("pk")), user=user).values(
        "last_read_id"
    )[:1]
    unread = (
        Message.objects.filter(room=OuterRef("pk"), deleted_at__isnull=True)
        .filter(~Q(author=user), id__gt=Coalesce(Subquery(marker), 0))
        .order_by()
        .values("room")
        .annotate(n=Count("pk"))
        .values("n")
    )
    latest = Message.objects.filter(room=OuterRef("pk")).order_by("-id").values("created")[:1]
    rooms = Room.objects.all()
    if query:
        rooms = rooms.filter(name__icontains=query)
    return rooms.annotate(
        unread=Coalesce(Subquery(unread), 0), last_activity=Subquery(latest)
    ).order_by("name")


@lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def online_counts(room_ids: list[int]) -> dict[int, int] | None:
    """How many people are in each room now, from the presence sets in Redis (one round trip).

    Each room's set maps a username to the expiry of their latest connection
    (chat.shared_state). None without Redis, or when Redis does not answer: show nothing.
    """
    if not settings.REDIS_URL:
        return None
    if not room_ids:
        return {}
    now = time.time()
    try:
        pipe = _redis(settings.REDIS_URL).pipeline(transaction=False)
        for room_id in room_ids:
            pipe.zcount(presence_key(room_id), now, "+inf")
        counts = pipe.execute()
    except Exception as error:
        logger.warning("lobby: presence unavailable: %s", error)
        return None
    return dict(zip(room_ids, (int(n) for n in counts), strict=True))


def _lobby(request: HttpRequest, form: RoomForm, status: int = 200) -> HttpResponse:
    # PostgreSQL's text cannot hold NUL: `?q=%00` would be a 500.
    query = request.GET.get("q", "").replace("\x00", "").strip()[:MAX_QUERY]
    rooms = list(lobby_rooms(request.user, query))
    online = online_counts([room.pk for room in rooms])
    for room in rooms:
        room.online = None if online is None else online.get(room.pk, 0)
    context = {"rooms": rooms, "form": form, "query": query}
    return render(request, "chat/lobby.html", context, status=status)


@login_required
@require_GET
def lobby(request: HttpRequest) -> HttpResponse:
    return _lobby(request, RoomForm())


@login_required
@require_POST
def create_room(request: HttpRequest) -> HttpResponse:
    form = RoomForm(request.POST)
    if form.is_valid():
        try:
            room = services.create_room(name=form.cleaned_data["name"], created_by=request.user)
        except IntegrityError:  # created by someone else between the check and the insert
            form.add_error("name", "A room with this name already exists.")
        else:
            return redirect("chat:room", slug=room.slug)
    return _lobby(request, form, status=400)


@login_required
@require_GET
@ensure_csrf_cookie
def room(request: HttpRequest, slug: str) -> HttpResponse:
    room = get_object_or_404(Room, slug=slug)
    last_read_id = (
        ReadMarker.objects.filter(user=request.user, room=room)
        .values_list("last_read_id", flat=True)
        .first()
    )
    return render(request, "chat/room.html", {"room": room, "last_read_id": last_read_id})


# Message ids are 64-bit.
MAX_ID = 2**63 - 1


@require_POST
def mark_read(request: HttpRequest, slug: str) -> JsonResponse:
    """`POST /rooms/<slug>/read` with `{"last_read_id": N}`: move the reader's marker forward.

    CSRF-protected (the page sends the csrftoken cookie's value as X-CSRFToken). Answers the
    marker as it stands: `{"last_read_id": N}`.
    """
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Log in first."}, status=401)
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        return JsonResponse({"error": "No such room."}, status=404)
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    value = data.get("last_read_id") if isinstance(data, dict) else None
    # bool is an int in Python, not in JSON.
    if type(value) is not int or not 0 <= value <= MAX_ID:
        return JsonResponse(
            {"error": "Send a JSON object with last_read_id, a message id."}, status=400
        )
    marker = services.mark_read(user=request.user, room=room, message_id=value)
    return JsonResponse({"last_read_id": marker})


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("chat:lobby")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat:lobby")
    return render(request, "registration/signup.html", {"form": form})


def _channel_layer_ok() -> bool:
    if not settings.REDIS_URL:
        return True
    return bool(_redis(settings.REDIS_URL).ping())


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
