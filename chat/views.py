import logging

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import IntegrityError, connection
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import services
from .forms import RoomForm
from .models import Room

logger = logging.getLogger(__name__)


def _lobby(request: HttpRequest, form: RoomForm, status: int = 200) -> HttpResponse:
    rooms = Room.objects.annotate(
        message_count=Count("messages"), last_activity=Max("messages__created")
    ).order_by("name")
    return render(request, "chat/lobby.html", {"rooms": rooms, "form": form}, status=status)


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
def room(request: HttpRequest, slug: str) -> HttpResponse:
    room = get_object_or_404(Room, slug=slug)
    return render(request, "chat/room.html", {"room": room})


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
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


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
