"""Reports (PROTOCOL.md §9): readers report from the socket, moderators close them from the
admin's queue (each closing action reaches live sockets and the audit log), direct rooms stay
private except through a report, and a private room's owners moderate it on the site."""

import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import Client, override_settings
from django.utils import timezone

from chat import services
from chat.models import Message, ModerationAction, Report, RoomRestriction
from tests.helpers import create_room, create_user, join, make_moderator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@database_sync_to_async
def get_as(user, path: str):
    return logged_in(user).get(path)


@database_sync_to_async
def scene():
    """alice wrote something rude in a public room; bob and carol read it; a moderator."""
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    room = create_room("General Chat", alice)
    rude = services.post_message(room=room, author=alice, body="rude words").message
    return alice, bob, carol, room, rude, make_moderator()


@database_sync_to_async
def reports_of(message) -> list[tuple[str, str, str]]:
    rows = Report.objects.filter(message=message).order_by("id")
    return list(rows.values_list("reporter__username", "reason", "state"))


@database_sync_to_async
def audit() -> list[tuple[str, str, str | None]]:
    rows = ModerationAction.objects.order_by("at", "id")
    return list(rows.values_list("action", "actor__username", "target__username"))


async def kinds_of(*sockets) -> set[str]:
    """The types of every frame these sockets get until they fall quiet."""
    return {frame["type"] for socket in sockets for frame in await socket.drain(timeout=0.5)}


# --- the `report` frame ---------------------------------------------------------------------------


async def test_a_reader_reports_a_message_and_only_the_reporter_hears_reported():
    alice, bob, carol, room, rude, _ = await scene()
    b, c, a = await join(bob, room.slug), await join(carol, room.slug), await join(alice, room.slug)
    await b.send({"type": "report", "id": rude.pk, "reason": "  insults  "})
    assert await b.receive_type("reported", "error") == {"type": "reported", "id": rude.pk}
    # Nobody else learns of it, the author least.
    assert not await kinds_of(c, a) & {"reported", "message", "error"}
    assert await reports_of(rude) == [("bob", "insults", "open")]
    # The reason may be left out or empty.
    await c.send({"type": "report", "id": rude.pk})
    assert await c.receive_type("reported", "error") == {"type": "reported", "id": rude.pk}
    assert await reports_of(rude) == [("bob", "insults", "open"), ("carol", "", "open")]


async def test_a_second_report_by_the_same_user_is_answered_reported_and_changes_nothing():
    _, bob, _, room, rude, _ = await scene()
    b = await join(bob, room.slug)
    for reason in ("first", "second, longer and different"):
        await b.send({"type": "report", "id": rude.pk, "reason": reason})
        assert await b.receive_type("reported", "error") == {"type": "reported", "id": rude.pk}
    assert await reports_of(rude) == [("bob", "first", "open")]


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"reason": "x" * 501}, "invalid"),
        ({"reason": 5}, "invalid"),
        ({"reason": "nul \x00"}, "invalid"),
        ({"id": "1"}, "invalid"),
        ({"id": 10**9}, "not_found"),
    ],
)
async def test_a_bad_report_is_refused_and_stores_nothing(frame, code):
    _, bob, _, room, rude, _ = await scene()
    b = await join(bob, room.slug)
    await b.send({"type": "report", "id": rude.pk, "reason": "", **frame})
    answer = await b.receive_type("reported", "error")
    assert (answer["type"], answer["code"]) == ("error", code), answer
    assert await reports_of(rude) == []
    # 500 characters exactly is fine.
    await b.send({"type": "report", "id": rude.pk, "reason": "x" * 500})
    assert (await b.receive_type("reported", "error"))["type"] == "reported"


async def test_room_notices_ones_own_words_and_other_rooms_messages_cannot_be_reported():
    alice, bob, _, room, rude, _ = await scene()

    @database_sync_to_async
    def more():
        elsewhere = create_room("Elsewhere", alice)
        far = services.post_message(room=elsewhere, author=alice, body="far away").message
        services.add_member(room=room, by=bob, username="bob")  # "bob joined"
        return far, Message.objects.get(room=room, system=True)

    elsewhere, notice = await more()
    a, b = await join(alice, room.slug), await join(bob, room.slug)
    await b.send({"type": "report", "id": notice.pk})
    assert (await b.receive_type("reported", "error"))["code"] == "forbidden"
    await a.send({"type": "report", "id": rude.pk})
    answer = await a.receive_type("reported", "error")
    assert (answer["code"], answer["ref"]) == ("forbidden", rude.pk)
    assert "your own" in answer["detail"]
    await b.send({"type": "report", "id": elsewhere.pk})
    assert (await b.receive_type("reported", "error"))["code"] == "not_found"
    assert not await database_sync_to_async(Report.objects.exists)()


@override_settings(CHAT_RATE_LIMIT_POSTS=2, CHAT_RATE_LIMIT_WINDOW=60)
async def test_reports_are_rate_limited_like_posts_on_a_counter_of_their_own():
    alice, bob, _, room, _, _ = await scene()
    messages = await database_sync_to_async(
        lambda: [
            services.post_message(room=room, author=alice, body=f"spam {i}").message
            for i in range(3)
        ]
    )()
    b = await join(bob, room.slug)
    for message in messages[:2]:
        await b.send({"type": "report", "id": message.pk})
        assert (await b.receive_type("reported", "error"))["type"] == "reported"
    await b.send({"type": "report", "id": messages[2].pk})
    refused = await b.receive_type("reported", "error")
    assert (refused["code"], refused["ref"]) == ("rate_limited", messages[2].pk)
    assert refused["retry_after"] > 0
    assert await reports_of(messages[2]) == []
    # Reporting did not use up bob's posts.
    await b.send({"type": "post", "body": "still talking"})
    assert (await b.receive_type("message"))["message"]["body"] == "still talking"


# --- the admin's queue -------------------------------------------------------------------------


@database_sync_to_async
def reported_scene():
    """Twelve messages in a room; bob and carol report the sixth (alice's) with reasons."""
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    room = create_room("General Chat", alice)
    posted = [
        services.post_message(room=room, author=bob if i % 2 else alice, body=f"line {i}").message
        for i in range(12)
    ]
    rude = posted[6]
    older = services.post_message(room=room, author=bob, body="an older problem").message
    services.report_message(room=room, message_id=older.pk, by=carol, reason="older")
    services.report_message(room=room, message_id=rude.pk, by=bob, reason="insults me")
    services.report_message(room=room, message_id=rude.pk, by=carol, reason="")
    return alice, bob, carol, room, posted, rude, make_moderator()


def _rows(html: str) -> list[str]:
    """The rows of the admin's result list (none when the queue is empty)."""
    table = re.search(r'<table id="result_list">.*?<tbody>(.*?)</tbody>', html, re.S)
    return re.findall(r"<tr.*?</tr>", table.group(1), re.S) if table else []


async def test_the_queue_lists_open_reports_newest_first_with_message_author_room_and_reporters():
    _, _, _, room, _, _rude, mod = await reported_scene()
    page = await get_as(mod, "/admin/chat/report/")
    assert page.status_code == 200
    rows = _rows(page.content.decode())
    assert len(rows) == 3
    # Newest first: carol's and bob's reports of "line 6", then carol's of the older message.
    assert ["carol", "bob", "carol"] == [
        re.search(r"field-reporter[^>]*>([^<]+)<", row).group(1) for row in rows
    ]
    assert "line 6" in rows[0] and "alice" in rows[0] and room.name in rows[0]
    assert "insults me" in rows[1] and "an older problem" in rows[2]


async def test_a_reports_page_shows_every_reason_and_reporter_and_the_ten_messages_around_it():
    _, _, _, _, _posted, rude, mod = await reported_scene()
    report = await database_sync_to_async(Report.objects.filter(message=rude).first)()
    page = await get_as(mod, f"/admin/chat/report/{report.pk}/change/")
    html = page.content.decode()
    assert "insults me" in html and "no reason given" in html
    assert ">bob</strong>" in html and ">carol</strong>" in html
    context = re.search(r'<ol class="report-context">(.*?)</ol>', html, re.S).group(1)
    shown = re.findall(r"line (\d+)", context)
    assert shown == [str(i) for i in range(1, 12)]  # five before, the message, five after
    assert 'class="reported"' in context
    for label in ("Hide the message", "Mute alice", "Ban alice", "Dismiss"):
        assert label in html


def close(client: Client, report: Report, resolution: str, **extra):
    return client.post(
        f"/admin/chat/report/{report.pk}/change/",
        {"resolution": resolution, "duration": "1d", "note": "", **extra},
    )


@database_sync_to_async
def close_as(user, report: Report, resolution: str, **extra):
    return close(logged_in(user), report, resolution, **extra)


@database_sync_to_async
def first_report(message) -> Report:
    return Report.objects.filter(message=message).first()


@database_sync_to_async
def handled_notice(user, room) -> tuple[bool, bool]:
    """Whether a room page tells `user` a report was handled, on this visit and on the next."""
    client = logged_in(user)
    path = f"/rooms/{room.slug}/"
    first = "report you made was handled" in client.get(path).content.decode()
    again = "report you made was handled" in client.get(path).content.decode()
    return first, again


async def test_hiding_from_a_report_reaches_live_sockets_closes_every_report_and_is_audited():
    _alice, bob, carol, room, _, rude, mod = await reported_scene()
    b = await join(bob, room.slug)
    response = await close_as(mod, await first_report(rude), "hidden")
    assert response.status_code == 302 and response["Location"] == "/admin/chat/report/"
    frame = await b.receive_type("message")
    assert frame["message"]["id"] == rude.pk
    assert (frame["message"]["deleted"], frame["message"]["deleted_by"]) == (True, "mod")
    assert await reports_of(rude) == [("bob", "insults me", "closed"), ("carol", "", "closed")]
    closed = await first_report(rude)
    assert (closed.resolution, closed.closed_by_id, closed.closed_at is not None) == (
        "hidden",
        mod.pk,
        True,
    )
    assert await audit() == [("hide", "mod", "alice")]
    # The reporters are told, once, and not by whom or how; the older report stays open.
    assert await handled_notice(bob, room) == (True, False)
    assert await handled_notice(carol, room) == (True, False)
    page = await get_as(mod, "/admin/chat/report/")
    assert len(_rows(page.content.decode())) == 1


async def test_muting_from_a_report_refuses_the_authors_posts_for_the_chosen_time():
    alice, _, _, room, _, rude, mod = await reported_scene()
    a = await join(alice, room.slug)
    before = timezone.now()
    await sync_to_async(close)(
        await database_sync_to_async(logged_in)(mod),
        await first_report(rude),
        "muted",
        duration="7d",
        note="cool off",
    )
    await a.send({"type": "post", "body": "more"})
    assert (await a.receive_type("error"))["code"] == "muted"
    mute = await database_sync_to_async(RoomRestriction.objects.get)(user=alice, kind="mute")
    assert before + timedelta(days=7) <= mute.until <= timezone.now() + timedelta(days=7)
    assert mute.reason == "cool off"
    assert await audit() == [("mute", "mod", "alice")]
    assert (await first_report(rude)).resolution == "muted"


async def test_banning_from_a_report_closes_the_authors_sockets_with_4403():
    alice, bob, _, room, _, rude, mod = await reported_scene()
    a, b = await join(alice, room.slug), await join(bob, room.slug)
    await close_as(mod, await first_report(rude), "banned", duration="")
    output = await a.communicator.receive_output(timeout=5)
    while output["type"] != "websocket.close":
        output = await a.communicator.receive_output(timeout=5)
    assert output["code"] == 4403
    ban = await database_sync_to_async(RoomRestriction.objects.get)(user=alice, kind="ban")
    assert ban.until is not None  # an empty duration is the form's default, a day
    assert await audit() == [("ban", "mod", "alice")]
    assert "message" not in await kinds_of(b)


async def test_dismissing_a_report_changes_nothing_in_the_room_and_is_audited():
    _alice, bob, _, room, _, rude, mod = await reported_scene()
    b = await join(bob, room.slug)
    await close_as(mod, await first_report(rude), "dismissed")
    assert "message" not in await kinds_of(b)
    assert not (await database_sync_to_async(Message.objects.get)(pk=rude.pk)).is_deleted
    assert await audit() == [("dismiss", "mod", "alice")]
    assert await handled_notice(bob, room) == (True, False)
    # A dismissed report is still one report: bob cannot report it again.
    await b.send({"type": "report", "id": rude.pk, "reason": "again!"})
    assert await b.receive_type("reported", "error") == {"type": "reported", "id": rude.pk}
    assert await reports_of(rude) == [("bob", "insults me", "closed"), ("carol", "", "closed")]


async def test_a_report_about_a_staff_account_cannot_be_closed_with_a_ban_by_a_moderator():
    _, bob, _, room, _, _, mod = await reported_scene()

    @database_sync_to_async
    def staff_message():
        staff = create_user("staffer", is_staff=True)
        message = services.post_message(room=room, author=staff, body="staff words").message
        return services.report_message(room=room, message_id=message.pk, by=bob)

    report = await staff_message()
    response = await close_as(mod, report, "banned")
    assert response.status_code == 302
    assert (await first_report(report.message)).state == "open"
    assert not await database_sync_to_async(RoomRestriction.objects.exists)()


async def test_closing_needs_the_permission_of_its_action():
    _, _, _, _, _, rude, _ = await reported_scene()

    @database_sync_to_async
    def reader():
        from django.contrib.auth.models import Permission

        user = create_user("reader", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(codename="view_report"))
        return user

    response = await close_as(await reader(), await first_report(rude), "hidden")
    assert response.status_code == 403
    assert (await first_report(rude)).state == "open"


# --- direct rooms stay private from moderators, but for a report ---------------------------------


@database_sync_to_async
def direct_scene():
    alice, bob = create_user("alice"), create_user("bob")
    room = services.open_direct(by=alice, usernames=["bob"])
    lines = [
        services.post_message(room=room, author=alice if i % 2 else bob, body=f"secret {i}").message
        for i in range(14)
    ]
    return alice, bob, room, lines, make_moderator()


async def test_a_moderator_cannot_read_an_unreported_direct_message_in_the_admin():
    _, _, _, lines, mod = await direct_scene()
    client = await database_sync_to_async(logged_in)(mod)
    for path in (
        f"/admin/chat/message/{lines[3].pk}/change/",
        "/admin/chat/message/",
        "/admin/chat/report/?state=all",
        "/admin/chat/moderationaction/",
    ):
        page = await sync_to_async(client.get)(path, follow=True)
        assert "secret" not in page.content.decode(), path
    assert await audit() == []


async def test_a_reported_direct_message_and_its_context_are_readable_and_each_view_audited():
    _alice, bob, room, lines, mod = await direct_scene()
    reported = lines[9]  # by alice
    report = await database_sync_to_async(services.report_message)(
        room=room, message_id=reported.pk, by=bob, reason="threat"
    )
    client = await database_sync_to_async(logged_in)(mod)
    queue = (await sync_to_async(client.get)("/admin/chat/report/")).content.decode()
    assert "secret" not in queue and "direct conversation" in queue  # text only on its page
    for _ in range(2):
        page = (
            await sync_to_async(client.get)(f"/admin/chat/report/{report.pk}/change/")
        ).content.decode()
        context = re.search(r'<ol class="report-context">(.*?)</ol>', page, re.S).group(1)
        assert re.findall(r"secret (\d+)", context) == [str(i) for i in range(4, 14)]
        assert "secret 3" not in page
    views = await database_sync_to_async(
        lambda: list(
            ModerationAction.objects.filter(action="view").values_list(
                "actor__username", "room_id", "message_id"
            )
        )
    )()
    assert views == [("mod", room.pk, reported.pk)] * 2
    # Still not in the message list, and the message's own admin page stays shut.
    page = await sync_to_async(client.get)(f"/admin/chat/message/{reported.pk}/change/")
    assert page.status_code == 302
    # Closing it works as in any room: alice's tombstone reaches bob.
    b = await join(bob, room.slug)
    await sync_to_async(close)(client, report, "hidden")
    frame = await b.receive_type("message")
    assert (frame["message"]["id"], frame["message"]["deleted"]) == (reported.pk, True)


# --- per-room moderators: a private room's owners -------------------------------------------------


@database_sync_to_async
def private_scene():
    owner, member, other = create_user("owner"), create_user("member"), create_user("other")
    room = services.create_room(
        name="Inner Circle", created_by=owner, kind="private", enforce_limit=False
    )
    for user in (member, other):
        services.add_member(room=room, by=owner, username=user.username)
    message = services.post_message(room=room, author=member, body="out of line").message
    return owner, member, other, room, message


def hide_door(user, room, message_id, body="{}"):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(f"/rooms/{room.slug}/")  # the page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    return client.post(
        f"/rooms/{room.slug}/messages/{message_id}/hide",
        body,
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )


async def test_a_private_rooms_owner_hides_a_message_live_and_audited():
    owner, _member, other, room, message = await private_scene()
    o = await join(other, room.slug)
    response = await sync_to_async(hide_door)(owner, room, message.pk, '{"reason": "rude"}')
    assert response.status_code == 200, response.content
    assert response.json()["message"]["deleted_by"] == "owner"
    frame = await o.receive_type("message")
    assert frame["message"] == {
        **frame["message"],
        "id": message.pk,
        "deleted": True,
        "deleted_by": "owner",
        "body": "",
    }
    row = await database_sync_to_async(ModerationAction.objects.get)()
    assert (row.action, row.actor_id, row.message_id, row.reason) == (
        "hide",
        owner.pk,
        message.pk,
        "rude",
    )
    # Hiding it again changes nothing and is no error.
    assert (await sync_to_async(hide_door)(owner, room, message.pk)).status_code == 200
    assert await database_sync_to_async(ModerationAction.objects.count)() == 1


async def test_only_the_owner_hides_and_not_room_notices():
    owner, _member, other, room, message = await private_scene()
    assert (await sync_to_async(hide_door)(other, room, message.pk)).status_code == 403
    notice = await database_sync_to_async(
        lambda: Message.objects.filter(room=room, system=True).first()
    )()
    assert (await sync_to_async(hide_door)(owner, room, notice.pk)).status_code == 403
    assert (await sync_to_async(hide_door)(owner, room, 10**9)).status_code == 404
    assert (await sync_to_async(hide_door)(owner, room, message.pk, "[1]")).status_code == 400
    assert not await database_sync_to_async(ModerationAction.objects.exists)()
    # Without the CSRF header: refused.
    client = Client(enforce_csrf_checks=True)
    await sync_to_async(client.force_login)(owner)
    response = await sync_to_async(client.post)(
        f"/rooms/{room.slug}/messages/{message.pk}/hide", "{}", content_type="application/json"
    )
    assert response.status_code == 403
    assert not (await database_sync_to_async(Message.objects.get)(pk=message.pk)).is_deleted


async def test_an_owners_removal_of_a_member_is_audited_and_leaving_is_not():
    owner, _member, other, room, _ = await private_scene()
    await database_sync_to_async(services.remove_member)(room=room, by=owner, username="member")
    await database_sync_to_async(services.remove_member)(room=room, by=other, username="other")
    assert await audit() == [("remove", "owner", "member")]


async def test_the_room_page_tells_owners_they_moderate_and_lists_the_readers_reports():
    owner, _member, other, room, message = await private_scene()
    await database_sync_to_async(services.report_message)(
        room=room, message_id=message.pk, by=other
    )
    owner_page = await get_as(owner, f"/rooms/{room.slug}/")
    assert 'data-can-hide="1"' in owner_page.content.decode()
    other_page = (await get_as(other, f"/rooms/{room.slug}/")).content
    assert 'data-can-hide=""' in other_page.decode()
    assert f"[{message.pk}]" in other_page.decode()  # reported-ids json


def test_the_audit_log_names_a_message_by_its_id_never_by_its_text():
    alice = create_user("alice")
    moderator = make_moderator("moderator")
    room = create_room("General", alice)
    message = services.post_message(room=room, author=alice, body="words only alice wrote").message
    services.hide_message(message=message, by=moderator)
    client = Client()
    client.force_login(moderator)
    listing = client.get("/admin/chat/moderationaction/")
    entry = ModerationAction.objects.get(message=message)
    page = client.get(f"/admin/chat/moderationaction/{entry.pk}/change/")
    for response in (listing, page):
        assert response.status_code == 200
        html = response.content.decode()
        assert f"Id{message.pk}" in html and "words only alice wrote" not in html
