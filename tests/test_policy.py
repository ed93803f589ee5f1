"""chat/policy.py on its own: each decision and its reason, without a door in front of it."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from chat import policy, services
from chat.models import Room
from chat.policy import Denial
from chat.realtime.protocol import ChatError, CloseCode, ErrorCode
from tests.helpers import create_room, create_user, make_moderator

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene():
    author, other = create_user("author"), create_user("other")
    mod = make_moderator("mod")
    room = create_room("Policy", author)
    message = services.post_message(room=room, author=author, body="words").message
    return author, other, mod, room, message


def test_a_room_nobody_may_see_is_the_same_as_no_room(scene):
    author, _, mod, room, _ = scene
    assert policy.room_for(author, room.slug) == room
    assert policy.room_for(author, "never-was") is None
    services.archive_room(room=room, by=mod)
    assert policy.room_for(author, room.slug) is None
    assert not policy.visible_rooms(author).exists()
    assert policy.room_for(AnonymousUser(), "policy") is None


def test_reading_needs_no_ban_posting_no_mute(scene):
    _, other, mod, room, _ = scene
    assert policy.access(other, room).can_post() is None
    services.restrict_user(room=room, user=other, kind="mute", by=mod)
    access = policy.access(other, room)
    assert (access.can_read(), access.can_post()) == (None, Denial.MUTED)
    services.restrict_user(room=room, user=other, kind="ban", by=mod)
    access = policy.access(other, room)
    assert (access.can_read(), access.can_post()) == (Denial.BANNED, Denial.BANNED)


def test_an_expired_restriction_no_longer_applies(scene):
    _, other, mod, room, _ = scene
    services.restrict_user(
        room=room, user=other, kind="ban", by=mod, until=timezone.now() - timezone.timedelta(1)
    )
    assert policy.access(other, room).can_read() is None


def test_authors_edit_and_delete_their_own_messages_only(scene):
    author, other, mod, room, message = scene
    assert policy.access(author, room).can_edit(message) is None
    assert policy.access(other, room).can_edit(message) == Denial.NOT_AUTHOR
    assert policy.access(other, room).can_delete(message) == Denial.NOT_AUTHOR
    services.restrict_user(room=room, user=author, kind="mute", by=mod)
    access = policy.access(author, room)
    # A mute stops editing, not taking one's own words back.
    assert (access.can_edit(message), access.can_delete(message)) == (Denial.MUTED, None)


def test_a_tombstone_cannot_be_edited(scene):
    author, _, _, room, message = scene
    services.delete_message(room=room, message_id=message.pk, by=author)
    message.refresh_from_db()
    assert policy.access(author, room).can_edit(message) == Denial.TOMBSTONE


def test_only_a_superuser_restricts_staff(scene):
    author, _, mod, _, _ = scene
    root = create_user("root", is_staff=True, is_superuser=True)
    assert policy.can_restrict(actor=mod, target=author) is None
    assert policy.can_restrict(actor=mod, target=root) == Denial.STAFF_TARGET
    assert policy.can_restrict(actor=root, target=mod) is None


def test_moderators_are_staff_with_the_moderation_permission(scene):
    author, _, mod, room, _ = scene
    assert policy.access(mod, room).can_moderate() is None
    assert policy.access(author, room).can_moderate() == Denial.NOT_MODERATOR
    staff = create_user("staff", is_staff=True)
    assert policy.access(staff, room).can_moderate() == Denial.NOT_MODERATOR


@pytest.mark.parametrize("denial", list(Denial))
def test_every_denial_has_an_error_frame(denial):
    with pytest.raises(ChatError) as raised:
        policy.require(denial, ref=7, action="edit")
    assert raised.value.code in set(ErrorCode)
    assert raised.value.ref == 7 and raised.value.detail
    if denial in policy.CLOSE_CODES:
        assert policy.CLOSE_CODES[denial] in set(CloseCode)


def test_nothing_is_raised_when_allowed():
    policy.require(None)
    assert Room.objects.count() == 0


def test_the_policys_facts_are_what_the_orm_says_of_restrictions_in_force_and_roles():
    """policy._facts is written in SQL for speed; RestrictionQuerySet.active() and Membership are
    the definitions it must agree with, for every kind of restriction and role."""
    from datetime import timedelta

    from django.db.models import Value
    from django.db.models.functions import Concat

    from chat.models import Membership, RoomRestriction

    owner = create_user("owner")
    users = [create_user(f"user{i}") for i in range(6)]
    rooms = [create_room("One", owner), create_room("Two", owner)]
    now = timezone.now()
    Kind = RoomRestriction.Kind
    for room in rooms:
        RoomRestriction.objects.create(room=room, user=users[0], kind=Kind.BAN, created_by=owner)
        RoomRestriction.objects.create(
            room=room, user=users[1], kind=Kind.MUTE, until=now + timedelta(hours=1),
            created_by=owner,
        )  # fmt: skip
        RoomRestriction.objects.create(
            room=room, user=users[2], kind=Kind.BAN, until=now - timedelta(seconds=1),
            created_by=owner,
        )  # fmt: skip
        RoomRestriction.objects.create(
            room=room, user=users[3], kind=Kind.BAN, lifted_at=now, created_by=owner
        )
    Membership.objects.create(room=rooms[1], user=users[4], role=Membership.Role.OWNER)
    Membership.objects.create(room=rooms[0], user=users[5])
    room_ids = [room.pk for room in rooms]
    user_ids = [user.pk for user in [owner, *users]]
    expected = list(
        RoomRestriction.objects.active()
        .filter(room_id__in=room_ids, user_id__in=user_ids)
        .values_list("room_id", "user_id", "kind")
    ) + list(
        Membership.objects.filter(room_id__in=room_ids, user_id__in=user_ids)
        .annotate(kind=Concat(Value(policy.ROLE_PREFIX), "role"))
        .values_list("room_id", "user_id", "kind")
    )
    found = policy._facts(room_ids, user_ids)
    assert sorted(found) == sorted(expected)
    assert {kind for _, _, kind in found} == {"ban", "mute", "role:owner", "role:member"}
    # And one pair at a time, as a frame asks it.
    assert policy.access(users[0], rooms[0]).can_read() is Denial.BANNED
    assert policy.access(users[1], rooms[0]).can_post() is Denial.MUTED
    assert policy.access(users[2], rooms[0]).can_read() is None
    assert policy.access(users[3], rooms[0]).can_read() is None
    assert policy.access(users[4], rooms[1]).role == Membership.Role.OWNER
