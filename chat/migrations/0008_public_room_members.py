"""Every room made before private rooms is public; its members are the people who posted there or
kept a read marker there, and its creator among them is its owner (PROTOCOL.md §4)."""

from django.db import migrations

BATCH = 5000


def add_members(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    Message = apps.get_model("chat", "Message")
    ReadMarker = apps.get_model("chat", "ReadMarker")
    Membership = apps.get_model("chat", "Membership")

    creators = dict(Room.objects.values_list("pk", "created_by_id"))
    pairs = set(Message.objects.order_by().values_list("room_id", "author_id").distinct())
    pairs |= set(ReadMarker.objects.order_by().values_list("room_id", "user_id").distinct())
    rows = [
        Membership(
            room_id=room_id,
            user_id=user_id,
            role="owner" if creators.get(room_id) == user_id else "member",
        )
        for room_id, user_id in sorted(pairs)
    ]
    Membership.objects.bulk_create(rows, batch_size=BATCH, ignore_conflicts=True)


def remove_members(apps, schema_editor):
    apps.get_model("chat", "Membership").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0007_private_rooms")]

    operations = [migrations.RunPython(add_members, remove_members)]
