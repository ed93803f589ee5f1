"""Attachments (PROTOCOL.md §8): upload, post, fetch, erase; hostile files; the S3 store.

The filesystem store is this run's temporary directory (tests/conftest.py); the S3 store is a
real S3 API, moto's server on loopback. nginx's part (X-Accel-Redirect, the body limit) is in
tests/test_nginx.py.
"""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from PIL import Image

from bench.servers import free_port
from chat import selectors, services
from chat.attachments import clean_name, storage
from chat.models import Attachment, Message
from chat.realtime import protocol
from tests.helpers import create_room, create_user, join, make_moderator

pytestmark = pytest.mark.django_db(transaction=True)


# --- files to upload ------------------------------------------------------------------------------


def png(width: int = 40, height: int = 30, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def jpeg_with_gps_and_orientation() -> bytes:
    """A 60x20 photo stored sideways (EXIF orientation 6: turn it to be 20x60) with a GPS
    position in its EXIF, as phones write them."""
    image = Image.new("RGB", (60, 20), (10, 120, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.0)  # GPSLatitudeRef, GPSLatitude
    gps[3], gps[4] = "E", (13.0, 24.0, 36.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming width x height pixels, then a few bytes of
    data: decoding it would ask for width x height x 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


SVG = b"""<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>"""
HTML = b"<!doctype html><html><script>alert(document.cookie)</script></html>"


# --- doors ----------------------------------------------------------------------------------------


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def upload(user, slug: str, name: str, data: bytes, client: Client | None = None):
    client = client or client_for(user)
    return client.post(f"/rooms/{slug}/uploads", {"file": _named(name, data)})


def _named(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def fetch(user, url: str):
    return client_for(user).get(url)


def body_of(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def stored_files() -> list[str]:
    root = Path(settings.CHAT_MEDIA_ROOT)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def post_with(room, author, ids, body: str = "") -> Message:
    return services.post_message(room=room, author=author, body=body, attach=tuple(ids)).message


@pytest.fixture(autouse=True)
def empty_media() -> None:
    """Each test starts with no stored file (the directory is the run's, tests/conftest.py)."""
    root = Path(settings.CHAT_MEDIA_ROOT)
    for child in root.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


@pytest.fixture
def people():
    alice, bob = create_user("alice"), create_user("bob")
    public = create_room("Lounge", alice)
    private = services.create_room(
        name="Secret", created_by=alice, kind="private", enforce_limit=False
    )
    services.add_member(room=private, by=alice, username="bob")
    return {"alice": alice, "bob": bob, "carol": create_user("carol"), "public": public,
            "private": private}  # fmt: skip


# --- the round trip -------------------------------------------------------------------------------


async def test_an_image_uploaded_then_posted_reaches_the_room_and_a_member_fetches_it():
    alice = await database_sync_to_async(create_user)("alice")
    bob = await database_sync_to_async(create_user)("bob")
    room = await database_sync_to_async(create_room)("Pictures", alice)
    answer = await database_sync_to_async(upload)(alice, room.slug, "sunset.png", png(800, 600))
    assert answer.status_code == 201, answer.content
    uploaded = answer.json()
    assert uploaded == {
        "id": uploaded["id"],
        "name": "sunset.png",
        "size": uploaded["size"],
        "content_type": "image/png",
        "url": f"/files/{uploaded['id']}/sunset.png",
        "thumbnail_url": f"/files/thumbnails/{uploaded['id']}",
        "width": 800,
        "height": 600,
    }

    watcher = await join(bob, room.slug)
    poster = await join(alice, room.slug)
    await poster.send(
        {"type": "post", "body": "", "attachments": [uploaded["id"]], "client_id": "p1"}
    )
    frame = await watcher.receive_type("message")
    assert frame["message"]["body"] == ""
    assert frame["message"]["attachments"] == [uploaded]
    await watcher.close()
    await poster.close()

    image = await database_sync_to_async(fetch)(bob, uploaded["url"])
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"
    assert image["Content-Disposition"].startswith("inline")
    assert image["X-Content-Type-Options"] == "nosniff"
    assert image["Content-Security-Policy"] == "sandbox"
    data = body_of(image)
    assert Image.open(io.BytesIO(data)).size == (800, 600)
    assert len(data) == uploaded["size"]

    thumbnail = await database_sync_to_async(fetch)(bob, uploaded["thumbnail_url"])
    assert thumbnail.status_code == 200
    assert thumbnail["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body_of(thumbnail))).size == (400, 300)

    # A page of history carries it too, for a reader who opens the room later.
    ready = await join(bob, room.slug)
    assert ready.ready["messages"][-1]["attachments"] == [uploaded]
    await ready.close()


def test_a_file_that_is_not_an_image_is_only_ever_downloaded(people):
    answer = upload(people["alice"], people["public"].slug, "report.pdf", b"%PDF-1.4 not much")
    assert answer.status_code == 201
    uploaded = answer.json()
    assert (uploaded["content_type"], uploaded["thumbnail_url"]) == ("application/pdf", None)
    assert (uploaded["width"], uploaded["height"]) == (None, None)
    post_with(people["public"], people["alice"], [uploaded["id"]], "the report")
    got = fetch(people["bob"], uploaded["url"])
    assert got.status_code == 200
    assert body_of(got) == b"%PDF-1.4 not much"
    assert got["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert got["X-Content-Type-Options"] == "nosniff"
    assert got["Content-Security-Policy"] == "sandbox"


def test_a_message_page_reads_its_attachments_in_a_fixed_number_of_queries(people):
    room, alice = people["public"], people["alice"]

    def page_queries(count: int) -> int:
        for i in range(count):
            ids = [upload(alice, room.slug, f"f{i}-{j}.txt", b"x").json()["id"] for j in range(2)]
            post_with(room, alice, ids, f"message {i}")
        with CaptureQueriesContext(connection) as queries:
            messages, _ = selectors.latest_messages(room, 50)
            frames = [protocol.message_object(m) for m in messages]
        assert all(len(f["attachments"]) == 2 for f in frames if f["body"].startswith("message"))
        return len(queries)

    with override_settings(CHAT_RATE_LIMIT_UPLOADS=1000):
        assert page_queries(2) == page_queries(6)


# --- who may fetch --------------------------------------------------------------------------------


def test_a_private_rooms_file_is_404_for_a_non_member_a_removed_member_and_anyone_logged_out(
    people,
):
    room = people["private"]
    uploaded = upload(people["alice"], room.slug, "plan.txt", b"the plan").json()
    post_with(room, people["alice"], [uploaded["id"]], "here")
    assert fetch(people["bob"], uploaded["url"]).status_code == 200
    assert fetch(people["carol"], uploaded["url"]).status_code == 404  # not a member
    assert fetch(None, uploaded["url"]).status_code == 404  # not logged in
    services.remove_member(room=room, by=people["alice"], username="bob")
    assert fetch(people["bob"], uploaded["url"]).status_code == 404  # removed
    assert fetch(people["alice"], uploaded["url"]).status_code == 200


def test_an_upload_not_yet_posted_is_for_its_uploader_alone(people):
    uploaded = upload(people["alice"], people["public"].slug, "draft.txt", b"draft").json()
    assert fetch(people["alice"], uploaded["url"]).status_code == 200
    assert fetch(people["bob"], uploaded["url"]).status_code == 404


def test_the_authors_deletion_erases_the_files_and_their_urls_answer_404(people):
    room, alice = people["public"], people["alice"]
    uploaded = upload(alice, room.slug, "me.png", png()).json()
    message = post_with(room, alice, [uploaded["id"]], "a photo")
    assert len(stored_files()) == 2  # the image and its thumbnail
    deleted = services.delete_message(room=room, message_id=message.pk, by=alice)
    assert protocol.message_object(deleted)["attachments"] == []
    assert stored_files() == []
    assert not Attachment.objects.exists()
    for url in (uploaded["url"], uploaded["thumbnail_url"]):
        assert fetch(people["bob"], url).status_code == 404
        assert fetch(alice, url).status_code == 404


def test_a_hidden_messages_files_answer_moderators_only(people):
    room, alice = people["public"], people["alice"]
    moderator = make_moderator("mod")
    uploaded = upload(alice, room.slug, "rude.png", png()).json()
    message = post_with(room, alice, [uploaded["id"]], "look")
    services.hide_message(message=message, by=moderator, reason="rude")
    assert fetch(people["bob"], uploaded["url"]).status_code == 404
    assert fetch(alice, uploaded["url"]).status_code == 404
    assert fetch(moderator, uploaded["url"]).status_code == 200
    # Kept for the moderators, and listed on the message's admin page with its size.
    page = client_for(moderator).get(f"/admin/chat/message/{message.pk}/change/")
    assert uploaded["url"] in page.content.decode()
    assert "rude.png" in page.content.decode()
    services.restore_message(message=message, by=moderator)
    assert fetch(people["bob"], uploaded["url"]).status_code == 200


# --- posting with attachments ---------------------------------------------------------------------


def test_a_post_attaches_only_the_posters_own_unposted_uploads_in_that_room(people):
    alice, bob, public, private = (people[k] for k in ("alice", "bob", "public", "private"))
    mine = upload(alice, public.slug, "a.txt", b"a").json()["id"]
    bobs = upload(bob, public.slug, "b.txt", b"b").json()["id"]
    elsewhere = upload(alice, private.slug, "c.txt", b"c").json()["id"]
    for ids in ([bobs], [elsewhere], [mine, 10**9]):
        with pytest.raises(protocol.ChatError) as refused:
            post_with(public, alice, ids, "with files")
        assert refused.value.code == "invalid"
    assert Message.objects.filter(body="with files").count() == 0  # nothing was stored
    post_with(public, alice, [mine], "with files")
    with pytest.raises(protocol.ChatError) as again:  # already posted
        post_with(public, alice, [mine], "again")
    assert again.value.code == "invalid"


def test_a_post_frame_names_at_most_ten_distinct_upload_ids():
    def post(ids):
        return protocol.encode({"type": "post", "body": "x", "attachments": ids})

    assert protocol.parse(post(list(range(1, 11)))).attachments == tuple(range(1, 11))
    for bad in (list(range(1, 12)), [1, 1], [True], ["1"], [0], 5, {"id": 1}):
        with pytest.raises(protocol.ChatError) as refused:
            protocol.parse(post(bad))
        assert refused.value.code == "invalid", bad


def test_only_a_post_with_attachments_may_have_an_empty_body(people):
    room, alice = people["public"], people["alice"]
    with pytest.raises(protocol.ChatError) as refused:
        services.post_message(room=room, author=alice, body="  ")
    assert refused.value.code == "empty"
    uploaded = upload(alice, room.slug, "a.txt", b"a").json()["id"]
    assert post_with(room, alice, [uploaded], "  ").body == ""


# --- the upload door's refusals -------------------------------------------------------------------


def test_the_upload_door_needs_a_login_the_csrf_header_and_a_room_one_can_post_in(people):
    slug = people["private"].slug
    assert upload(None, slug, "a.txt", b"a").status_code == 401
    assert upload(people["carol"], slug, "a.txt", b"a").status_code == 404
    assert upload(people["carol"], "no-such-room", "a.txt", b"a").status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(people["bob"])
    assert upload(people["bob"], slug, "a.txt", b"a", client=strict).status_code == 403
    services.restrict_user(
        room=people["public"], user=people["bob"], kind="mute", by=make_moderator("mod")
    )
    muted = upload(people["bob"], people["public"].slug, "a.txt", b"a")
    assert (muted.status_code, muted.json()["code"]) == (403, "muted")
    assert not Attachment.objects.exists()
    assert stored_files() == []


def test_an_empty_file_is_refused(people):
    answer = upload(people["alice"], people["public"].slug, "empty.txt", b"")
    assert answer.status_code == 400
    assert "empty" in answer.json()["error"]
    assert stored_files() == []


@override_settings(CHAT_MAX_UPLOAD_BYTES=1000)
def test_a_file_over_the_limit_is_refused_with_413_and_nothing_is_kept(people):
    answer = upload(people["alice"], people["public"].slug, "big.bin", b"x" * 1001)
    assert answer.status_code == 413
    assert "at most" in answer.json()["error"]
    assert upload(people["alice"], people["public"].slug, "ok.bin", b"x" * 1000).status_code == 201
    assert not Attachment.objects.filter(name="big.bin").exists()
    assert len(stored_files()) == 1


@override_settings(CHAT_UPLOAD_QUOTA_BYTES=2500)
def test_uploads_past_the_users_quota_are_refused_until_files_are_erased(people):
    room, alice = people["public"], people["alice"]
    first = upload(alice, room.slug, "one.bin", b"1" * 1500).json()
    refused = upload(alice, room.slug, "two.bin", b"2" * 1500)
    assert refused.status_code == 413
    assert "quota" in refused.json()["error"] or "of your" in refused.json()["error"]
    assert upload(people["bob"], room.slug, "bobs.bin", b"2" * 1500).status_code == 201
    message = post_with(room, alice, [first["id"]], "one")
    services.delete_message(room=room, message_id=message.pk, by=alice)
    assert upload(alice, room.slug, "two.bin", b"2" * 1500).status_code == 201


@override_settings(CHAT_RATE_LIMIT_UPLOADS=2, CHAT_RATE_LIMIT_UPLOADS_WINDOW=60)
def test_uploads_are_rate_limited_per_user(people):
    for name in ("a", "b"):
        assert upload(people["alice"], people["public"].slug, name, b"x").status_code == 201
    third = upload(people["alice"], people["public"].slug, "c", b"x")
    assert third.status_code == 429
    assert int(third["Retry-After"]) >= 1


# --- hostile files --------------------------------------------------------------------------------


def test_a_png_named_file_that_is_html_is_not_an_image_and_is_served_as_a_download(people):
    uploaded = upload(people["alice"], people["public"].slug, "cute.png", HTML).json()
    assert uploaded["content_type"] == "application/octet-stream"
    assert uploaded["thumbnail_url"] is None
    post_with(people["public"], people["alice"], [uploaded["id"]])
    got = fetch(people["bob"], uploaded["url"])
    assert got["Content-Type"] == "application/octet-stream"
    assert got["Content-Disposition"].startswith("attachment")
    assert got["X-Content-Type-Options"] == "nosniff"
    assert got["Content-Security-Policy"] == "sandbox"


def test_an_svg_with_a_script_is_served_as_an_attachment_never_inline(people):
    uploaded = upload(people["alice"], people["public"].slug, "logo.svg", SVG).json()
    assert uploaded["content_type"] == "application/octet-stream"  # never image/svg+xml
    assert uploaded["thumbnail_url"] is None
    post_with(people["public"], people["alice"], [uploaded["id"]])
    got = fetch(people["bob"], uploaded["url"])
    assert got["Content-Disposition"] == 'attachment; filename="logo.svg"'
    assert got["Content-Type"] == "application/octet-stream"
    assert got["Content-Security-Policy"] == "sandbox"
    assert body_of(got) == SVG


def test_a_decompression_bomb_is_refused_from_its_header_before_it_is_decoded(people):
    # 100,000 x 100,000 pixels: 30 GB decoded, 200 bytes on the wire. Refused as Pillow reads
    # the header, so no memory is asked for the pixels (it would fail here if it were).
    bomb = png_header_bomb(100_000, 100_000)
    assert len(bomb) < 500
    answer = upload(people["alice"], people["public"].slug, "bomb.png", bomb)
    assert answer.status_code == 400
    assert "too large" in answer.json()["error"]
    # Just over the setting, under Pillow's own hard limit (twice it): refused by ours.
    with override_settings(CHAT_MAX_IMAGE_PIXELS=1000):
        answer = upload(people["alice"], people["public"].slug, "wide.png", png(40, 30))
        assert answer.status_code == 400
    assert not Attachment.objects.exists()
    assert stored_files() == []


def test_a_photo_is_served_upright_without_its_exif_and_gps_position(people):
    photo = jpeg_with_gps_and_orientation()
    assert Image.open(io.BytesIO(photo)).getexif().get_ifd(0x8825)  # the GPS is in the upload
    uploaded = upload(people["alice"], people["public"].slug, "beach.jpg", photo).json()
    assert (uploaded["content_type"], uploaded["width"], uploaded["height"]) == (
        "image/jpeg",
        20,
        60,
    )
    post_with(people["public"], people["alice"], [uploaded["id"]])
    for url in (uploaded["url"], uploaded["thumbnail_url"]):
        served = body_of(fetch(people["bob"], url))
        image = Image.open(io.BytesIO(served))
        assert image.size == (20, 60)
        assert dict(image.getexif()) == {}
        assert b"PhoneMaker" not in served and b"Exif" not in served


def test_names_with_path_separators_and_bidi_controls_are_cleaned(people):
    hostile = "../../etc/\u202egnp.exe\u200b\x00.txt"
    uploaded = upload(people["alice"], people["public"].slug, hostile, b"x").json()
    assert uploaded["name"] == "gnp.exe.txt"
    assert clean_name("..\\..\\windows\\system32\\evil.dll") == "evil.dll"
    assert clean_name("\u2066\u2067\u2068\u2069\u200e\u200f") == "file"
    assert clean_name("...hidden") == "hidden"
    long = clean_name("x" * 500 + ".pdf")
    assert len(long) == 150 and long.endswith(".pdf")
    assert clean_name("e" + "\u0301" * 50) == "é" + "\u0301" * 8  # NFC, then 8 marks at most
    # The stored file's key is ours, never the name.
    assert all(path.startswith("rooms/") for path in stored_files())


# --- lifecycle ------------------------------------------------------------------------------------


def test_the_cleanup_job_erases_old_unattached_uploads_and_keeps_attached_and_recent_ones(people):
    room, alice = people["public"], people["alice"]
    old_unattached = upload(alice, room.slug, "old.txt", b"old").json()["id"]
    old_attached = upload(alice, room.slug, "kept.txt", b"kept").json()["id"]
    post_with(room, alice, [old_attached], "kept")
    recent = upload(alice, room.slug, "recent.txt", b"recent").json()["id"]
    Attachment.objects.filter(pk__in=[old_unattached, old_attached]).update(
        created=timezone.now() - timedelta(hours=25)
    )
    out = io.StringIO()
    call_command("purge_uploads", stdout=out)
    assert "erased 1 upload(s)" in out.getvalue()
    assert set(Attachment.objects.values_list("pk", flat=True)) == {old_attached, recent}
    assert len(stored_files()) == 2
    assert not storage().exists(f"rooms/{room.pk}/missing")


def test_deleting_an_account_erases_that_users_files(people):
    room, alice = people["public"], people["alice"]
    posted = upload(alice, room.slug, "posted.txt", b"p").json()["id"]
    post_with(room, alice, [posted], "mine")
    upload(alice, room.slug, "unposted.txt", b"u")
    theirs = upload(people["bob"], room.slug, "bobs.txt", b"b").json()["id"]
    services.delete_account(user=alice)
    assert list(Attachment.objects.values_list("pk", flat=True)) == [theirs]
    assert len(stored_files()) == 1


# --- S3 through a local moto server ---------------------------------------------------------------

BUCKET = "chat-test-files"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    binary = Path(sys.executable).parent / "moto_server"
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            assert process.poll() is None, "moto_server exited"
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def s3(moto_server: str):
    import boto3

    options = {
        "endpoint_url": moto_server,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "region_name": "us-east-1",
    }
    client = boto3.client("s3", **options)
    client.create_bucket(Bucket=BUCKET)
    stores = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": moto_server,
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "addressing_style": "path",
                "signature_version": "s3v4",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 60,
                "file_overwrite": False,
            },
        },
    }
    with override_settings(STORAGES=stores):
        yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def keys_in(client) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def follow(response):
    """Fetch the signed link a download answered with, as a browser follows the redirect."""
    assert response.status_code == 302, response.status_code
    assert response["Cache-Control"] == "private, no-store"
    try:
        with urllib.request.urlopen(response["Location"], timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_on_s3_upload_post_fetch_by_a_member_404_for_others_and_erased_with_the_message(people, s3):
    room, alice = people["private"], people["alice"]
    uploaded = upload(alice, room.slug, "photo.png", png(500, 250)).json()
    assert uploaded["content_type"] == "image/png"
    assert len(keys_in(s3)) == 2  # the image and its thumbnail, in the bucket
    assert stored_files() == []  # and nothing on the local disk
    message = post_with(room, alice, [uploaded["id"]], "from S3")

    status, headers, data = follow(fetch(people["bob"], uploaded["url"]))
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"].startswith("inline")
    assert Image.open(io.BytesIO(data)).size == (500, 250)
    status, _, data = follow(fetch(people["bob"], uploaded["thumbnail_url"]))
    assert (status, Image.open(io.BytesIO(data)).size) == (200, (400, 200))

    assert fetch(people["carol"], uploaded["url"]).status_code == 404  # not a member
    assert fetch(None, uploaded["url"]).status_code == 404
    services.remove_member(room=room, by=alice, username="bob")
    assert fetch(people["bob"], uploaded["url"]).status_code == 404  # removed

    services.delete_message(room=room, message_id=message.pk, by=alice)
    assert keys_in(s3) == []
    assert fetch(alice, uploaded["url"]).status_code == 404


def test_on_s3_a_file_that_is_not_an_image_downloads_with_its_name(people, s3):
    room, alice = people["public"], people["alice"]
    uploaded = upload(alice, room.slug, "notes.svg", SVG).json()
    post_with(room, alice, [uploaded["id"]], "notes")
    status, headers, data = follow(fetch(people["bob"], uploaded["url"]))
    assert (status, data) == (200, SVG)
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == 'attachment; filename="notes.svg"'


def test_on_s3_the_cleanup_job_erases_old_unattached_uploads(people, s3):
    room, alice = people["public"], people["alice"]
    old = upload(alice, room.slug, "old.txt", b"old").json()["id"]
    upload(alice, room.slug, "new.txt", b"new")
    Attachment.objects.filter(pk=old).update(created=timezone.now() - timedelta(days=2))
    call_command("purge_uploads", stdout=io.StringIO())
    assert len(keys_in(s3)) == 1
    assert Attachment.objects.count() == 1


def test_the_s3_settings_choose_django_storages_s3_backend():
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DJANGO_SECRET_KEY": "x",
        "CHAT_S3_BUCKET": "files",
        "CHAT_S3_ENDPOINT_URL": "http://minio:9000",
        "CHAT_S3_ACCESS_KEY_ID": "key",
        "CHAT_S3_SECRET_ACCESS_KEY": "secret",
        "CHAT_S3_REGION": "eu-west-1",
    }
    script = (
        "from django.conf import settings; import json;"
        "print(json.dumps(settings.STORAGES['attachments']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    chosen = json.loads(result.stdout)
    assert chosen["BACKEND"] == "storages.backends.s3.S3Storage"
    assert chosen["OPTIONS"]["bucket_name"] == "files"
    assert chosen["OPTIONS"]["endpoint_url"] == "http://minio:9000"
    assert chosen["OPTIONS"]["addressing_style"] == "path"
    assert chosen["OPTIONS"]["querystring_expire"] == 60
