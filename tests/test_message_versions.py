"""Earlier versions of an edited message (issue 17): kept by each edit (services.edit_message),
read back by its author and the room's moderators (policy.Access.can_see_versions) through
`GET /rooms/<slug>/messages/<id>/versions`, never once it is deleted (PROTOCOL.md §2) except in
the admin, and erased with the deleted text. Who gets what at the door for every role and room
kind is in tests/test_authorization.py."""

import pytest
from django.test import Client
from django.utils import timezone

from chat import selectors, services
from chat.models import Message, MessageRevision, Room
from chat.realtime.protocol import ChatError
from tests.helpers import create_room, create_user, make_moderator

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def versions_door(user, message: Message):
    response = client_for(user).get(f"/rooms/{message.room.slug}/messages/{message.pk}/versions")
    return response.status_code, response.json()


@pytest.fixture
def people():
    alice, bob = create_user("alice"), create_user("bob")
    return alice, bob, create_room("General", alice)


def edited_twice(room: Room, author) -> Message:
    message = services.post_message(room=room, author=author, body="first *draft*").message
    services.edit_message(room=room, message_id=message.pk, by=author, body="second @bob")
    return services.edit_message(room=room, message_id=message.pk, by=author, body="**third**")


def test_each_edit_keeps_the_text_it_replaced_with_when_it_was_written(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    revisions = list(MessageRevision.objects.filter(message=message).order_by("id"))
    assert [r.body for r in revisions] == ["first *draft*", "second @bob"]
    assert revisions[0].html == "<p>first <em>draft</em></p>\n"
    assert revisions[1].mentions == ["bob"]
    # Each text was written when the one before it was replaced, the first when it was posted.
    assert revisions[0].written == message.created
    assert revisions[1].written == revisions[0].replaced
    assert message.edited == revisions[1].replaced


def test_the_versions_are_oldest_first_and_end_with_the_current_text(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    versions = selectors.message_versions(message)
    assert [v.body for v in versions] == ["first *draft*", "second @bob", "**third**"]
    assert versions[1].html == '<p>second <span class="mention">@bob</span></p>\n'
    assert versions[-1].html == "<p><strong>third</strong></p>\n"
    assert versions[-1].at == message.edited
    assert [v.at for v in versions] == sorted(v.at for v in versions)


def test_a_refused_edit_keeps_no_version(people):
    alice, bob, room = people
    message = services.post_message(room=room, author=alice, body="mine").message
    with pytest.raises(ChatError):
        services.edit_message(room=room, message_id=message.pk, by=bob, body="theirs")
    assert not MessageRevision.objects.exists()


def test_a_version_an_older_renderer_made_is_rendered_again_when_read(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    MessageRevision.objects.filter(message=message).update(html="<p>stale</p>", html_version=0)
    versions = selectors.message_versions(message)
    assert versions[0].html == "<p>first <em>draft</em></p>\n"


def test_the_author_reads_the_versions_at_the_door(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    status, data = versions_door(alice, message)
    assert status == 200
    assert [v["body"] for v in data["versions"]] == ["first *draft*", "second @bob", "**third**"]
    assert set(data["versions"][0]) == {"body", "html", "at"}
    assert data["versions"][-1]["html"] == "<p><strong>third</strong></p>\n"
    assert data["versions"][0]["at"].endswith("Z")


def test_someone_else_gets_404_as_for_a_message_that_does_not_exist(people):
    alice, bob, room = people
    message = edited_twice(room, alice)
    assert versions_door(bob, message)[0] == 404
    gone = Message(pk=10**9, room=room)
    assert versions_door(bob, gone) == versions_door(bob, message)


def test_a_site_moderator_reads_anyones_versions(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    status, data = versions_door(make_moderator("mod"), message)
    assert status == 200 and len(data["versions"]) == 3


def test_a_private_rooms_owner_reads_a_members_versions(people):
    alice, bob, _room = people
    room = services.create_room(
        name="Secret", created_by=alice, kind=Room.Kind.PRIVATE, enforce_limit=False
    )
    services.add_member(room=room, by=alice, username="bob")
    message = edited_twice(room, bob)
    assert versions_door(alice, message)[0] == 200
    carol = create_user("carol")
    services.add_member(room=room, by=alice, username="carol")
    assert versions_door(carol, message)[0] == 404  # a member, not an owner


def test_once_deleted_no_client_reads_the_versions_but_the_admin_shows_them(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    moderator = make_moderator("mod")
    services.delete_message(room=room, message_id=message.pk, by=alice)
    assert versions_door(alice, message)[0] == 404
    assert versions_door(moderator, message)[0] == 404  # the text never reaches a client (§2)
    page = client_for(moderator).get(f"/admin/chat/message/{message.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "first *draft*" in html and "second @bob" in html


def test_erasing_deleted_text_erases_its_earlier_versions(people):
    alice, bob, room = people
    erased = edited_twice(room, alice)
    kept = edited_twice(room, bob)  # not deleted: its versions stay
    services.delete_message(room=room, message_id=erased.pk, by=alice)
    services.erase_deleted_text(older_than=timezone.now() + timezone.timedelta(seconds=1))
    assert not MessageRevision.objects.filter(message=erased).exists()
    assert MessageRevision.objects.filter(message=kept).count() == 2


def test_a_hidden_messages_versions_stay_for_the_audit(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    services.hide_message(message=message, by=make_moderator("mod"), reason="spam")
    services.erase_deleted_text(older_than=timezone.now() + timezone.timedelta(seconds=1))
    assert MessageRevision.objects.filter(message=message).count() == 2


def test_the_versions_door_is_rate_limited_like_history(people, settings):
    settings.CHAT_RATE_LIMIT_HISTORY = 2
    alice, bob, room = people
    message = edited_twice(room, alice)
    assert versions_door(alice, message)[0] == 200
    assert versions_door(alice, message)[0] == 200
    response = client_for(alice).get(f"/rooms/{room.slug}/messages/{message.pk}/versions")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    # A refusal counts too, so probing for messages costs the same.
    assert versions_door(bob, message)[0] == 404
    assert versions_door(bob, message)[0] == 404
    assert versions_door(bob, message)[0] == 429


def test_the_versions_door_needs_a_login_and_answers_json(people):
    alice, _bob, room = people
    message = edited_twice(room, alice)
    response = Client().get(f"/rooms/{room.slug}/messages/{message.pk}/versions")
    assert response.status_code == 401 and response.json() == {"error": "Log in first."}
