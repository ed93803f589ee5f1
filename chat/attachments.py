"""Attachments (PROTOCOL.md §8): uploading, attaching, serving and erasing files.

An upload is checked and stored on its own (`upload`), then a `post` of its uploader's in the same
room attaches it (`attach`, from chat.services.post_message). Its bytes live in the storage called
"attachments" (settings.STORAGES: a local directory, or an S3-compatible store) under a key made
here, never from the file's name. Every download asks the access policy first (`download_for`),
then the bytes come from nginx (X-Accel-Redirect), from Django, or from a short-lived signed link.

Images are recognised by their content, never by their name: Pillow opens JPEG, PNG, GIF and
WebP only, and refuses one whose header promises more than CHAT_MAX_IMAGE_PIXELS before decoding
anything. An image is turned upright (its EXIF orientation), re-encoded without its metadata
(GPS positions, camera serials), and gets a thumbnail. Anything else, SVG included, is a file that
is only ever downloaded.
"""

import io
import logging
import mimetypes
import unicodedata
import uuid
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, storages
from django.db import transaction
from django.db.models import Sum
from django.http import FileResponse, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.utils.http import content_disposition_header
from PIL import Image, ImageOps, UnidentifiedImageError

from . import limits, policy
from .models import Attachment, Message, Room
from .realtime.protocol import MAX_ATTACHMENTS, ChatError, ErrorCode

logger = logging.getLogger(__name__)

# A cleaned name is at most this long (the extension kept when it is cut).
NAME_MAX = 150
# Where nginx serves the media volume from (deploy/nginx-common.conf: an `internal` location).
ACCEL_PREFIX = "/_chat_files/"

# The image formats Pillow may open, and how each is served.
IMAGE_TYPES = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
}
# What an image keeps of its metadata when re-encoded: how it is drawn, nothing about its making.
KEPT_INFO = ("transparency", "icc_profile", "duration", "loop", "background")
# Types a non-image is never served as, whatever its name says: they would be a page or a
# script if a browser ever rendered them (they are downloads anyway; belt and braces).
ACTIVE_TYPES = {
    "text/html",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
}


def storage():
    return storages["attachments"]


# --- names ------------------------------------------------------------------------------------


def clean_name(name: str) -> str:
    """A file name fit to show and to send back: its last path component, without control,
    format (bidi, zero-width) or unpaired surrogate characters, marks stacked no more than
    CHAT_MAX_COMBINING deep, spaces collapsed, no leading dots, at most NAME_MAX characters
    (the extension kept). "file" when nothing is left."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept, run = [], 0
    for char in unicodedata.normalize("NFC", name):
        category = unicodedata.category(char)
        if category.startswith("C"):  # Cc, Cf (bidi controls), Cs, Co, Cn
            continue
        run = run + 1 if category in ("Mn", "Me") else 0
        if run <= settings.CHAT_MAX_COMBINING:
            kept.append(char)
    name = " ".join("".join(kept).split()).lstrip(". ")
    if len(name) > NAME_MAX:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 16:
            name = stem[: NAME_MAX - len(extension) - 1].rstrip() + "." + extension
        else:
            name = name[:NAME_MAX].rstrip()
    return name or "file"


def _file_type(name: str) -> str:
    """A non-image's type, guessed from its name, but never an image's (the content said it is
    not one) nor one a browser would run."""
    guessed = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    if guessed.startswith("image/") or guessed in ACTIVE_TYPES:
        return "application/octet-stream"
    return guessed


# --- images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    thumbnail: bytes
    thumbnail_extension: str


def _refuse(detail: str) -> ChatError:
    return ChatError(ErrorCode.INVALID, detail, status=400)


def _open_image(file) -> Image.Image | None:
    """The image in `file` (its header read, nothing decoded), or None when it is not one of the
    formats we serve. Refuses one with more pixels than CHAT_MAX_IMAGE_PIXELS."""
    limit = settings.CHAT_MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit  # Pillow's own check agrees with ours
    file.seek(0)
    too_large = _refuse(f"That image is too large: at most {limit:,} pixels.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(file, formats=list(IMAGE_TYPES))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise too_large from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None
        width, height = image.size
        if width * height > limit:
            raise too_large
        frames = getattr(image, "n_frames", 1)
        if width * height * frames > limit:
            raise too_large
    return image


def _picture(file) -> Picture | None:
    """The image re-encoded (upright, without metadata) with its thumbnail, or None for a file
    that is not an image we serve (or is one too damaged to decode)."""
    image = _open_image(file)
    if image is None:
        return None
    kind = image.format
    content_type, extension = IMAGE_TYPES[kind]
    animated = getattr(image, "n_frames", 1) > 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            if not animated:
                image = ImageOps.exif_transpose(image)
            image.info = {key: image.info[key] for key in KEPT_INFO if key in image.info}
            out = io.BytesIO()
            options = {"quality": 90} if kind in ("JPEG", "WEBP") else {}
            if kind == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
                image = image.convert("RGB")
            image.save(out, format=kind, save_all=animated, **options)
            thumbnail, thumbnail_extension = _thumbnail(image)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning):
        return None  # truncated or corrupt: kept as a plain file
    return Picture(
        out.getvalue(),
        content_type,
        extension,
        image.width,
        image.height,
        thumbnail,
        thumbnail_extension,
    )


def _thumbnail(image: Image.Image) -> tuple[bytes, str]:
    """The first frame, fitting in CHAT_THUMBNAIL_SIZE square: PNG when it has transparency,
    else JPEG."""
    image.seek(0)
    clear = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    small = image.convert("RGBA" if clear else "RGB")
    size = settings.CHAT_THUMBNAIL_SIZE
    small.thumbnail((size, size))
    out = io.BytesIO()
    if clear:
        small.save(out, format="PNG", optimize=True)
        return out.getvalue(), "png"
    small.save(out, format="JPEG", quality=85)
    return out.getvalue(), "jpg"


# --- uploading --------------------------------------------------------------------------------


def _too_big(detail: str) -> ChatError:
    return ChatError(ErrorCode.TOO_LONG, detail, status=413)


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:g} MiB"


def check_size(size: int) -> None:
    """Refuse an upload of `size` bytes over CHAT_MAX_UPLOAD_BYTES (413), or empty (400)."""
    if size > settings.CHAT_MAX_UPLOAD_BYTES:
        raise _too_big(f"A file may be at most {_mib(settings.CHAT_MAX_UPLOAD_BYTES)}.")
    if size <= 0:
        raise ChatError(ErrorCode.EMPTY, "That file is empty.", status=400)


def used_bytes(user) -> int:
    """What the user's files take now (those not yet erased), against their quota."""
    return Attachment.objects.filter(uploader=user).aggregate(total=Sum("size"))["total"] or 0


def upload(*, room: Room, by, file: File) -> Attachment:
    """Store `file` for `by` in `room`, to be attached by one of their posts. Whoever may post in
    the room may upload; rate limited per user; a file over CHAT_MAX_UPLOAD_BYTES, or past the
    user's CHAT_UPLOAD_QUOTA_BYTES, is refused (413) and nothing is kept."""
    policy.require(policy.access(by, room).can_post())
    check_size(file.size)
    limits.hit_now(limits.UPLOADS, user_id=by.pk)
    quota = settings.CHAT_UPLOAD_QUOTA_BYTES
    used = used_bytes(by)
    if used + file.size > quota:
        raise _too_big(
            f"Your files take {_mib(used)} of your {_mib(quota)}; delete some messages with "
            "files to make room."
        )
    name = clean_name(file.name or "")
    picture = _picture(file)
    key = f"rooms/{room.pk}/{uuid.uuid4().hex}"
    keys = []
    try:
        if picture is not None:
            keys.append(storage().save(f"{key}.{picture.extension}", ContentFile(picture.data)))
            keys.append(
                storage().save(
                    f"{key}-thumb.{picture.thumbnail_extension}", ContentFile(picture.thumbnail)
                )
            )
            fields = {
                "size": len(picture.data),
                "content_type": picture.content_type,
                "width": picture.width,
                "height": picture.height,
                "thumbnail_key": keys[1],
            }
        else:
            file.seek(0)
            keys.append(storage().save(key, file))
            fields = {"size": file.size, "content_type": _file_type(name)}
        return Attachment.objects.create(uploader=by, room=room, name=name, key=keys[0], **fields)
    except BaseException:
        _delete_files(keys)
        raise


# --- attaching (a post) -----------------------------------------------------------------------


def attach(*, message: Message, ids: tuple[int, ...]) -> list[Attachment]:
    """Attach the uploads `ids` to a new message of their uploader's, in their room, in that
    order; `invalid` when any is not theirs, not in this room, or already posted (the caller's
    transaction then rolls back, message and all). Call inside that transaction."""
    if not ids:
        return []
    if len(ids) > MAX_ATTACHMENTS or len(set(ids)) != len(ids):
        raise ChatError(
            ErrorCode.INVALID,
            f"At most {MAX_ATTACHMENTS} different attachments per message.",
            ref=message.client_id or None,
        )
    claimed = Attachment.objects.filter(
        pk__in=ids, room_id=message.room_id, uploader_id=message.author_id, message__isnull=True
    ).update(message=message)
    if claimed != len(ids):
        raise ChatError(
            ErrorCode.INVALID,
            "Attach only files you uploaded to this room and have not posted yet.",
            ref=message.client_id or None,
        )
    rows = {row.pk: row for row in Attachment.objects.filter(pk__in=ids)}
    return [rows[pk] for pk in ids]


# --- erasing ----------------------------------------------------------------------------------


def _delete_files(keys: list[str]) -> None:
    for key in keys:
        try:
            storage().delete(key)
        except Exception:  # a store that does not answer: the row is gone, the bytes stay
            logger.warning("attachment file not erased: %s", key, exc_info=True)


def erase(attachments) -> int:
    """Remove these attachments (a queryset): their rows now, their files once the transaction
    commits. Returns how many."""
    rows = list(attachments.values_list("pk", "key", "thumbnail_key"))
    if not rows:
        return 0
    Attachment.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
    keys = [key for _, *pair in rows for key in pair if key]
    transaction.on_commit(lambda: _delete_files(keys))
    return len(rows)


def erase_unattached(*, older_than, batch_size: int = 200) -> int:
    """Erase uploads never attached to a message, made before `older_than`; returns how many.
    In batches, each its own transaction."""
    erased = 0
    while True:
        with transaction.atomic():
            ids = list(
                Attachment.objects.filter(message__isnull=True, created__lt=older_than)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return erased
            # The condition again: a post may have attached one in between.
            erased += erase(Attachment.objects.filter(pk__in=ids, message__isnull=True))


# --- serving ----------------------------------------------------------------------------------


class NotFound(Exception):
    """Not a file this user may have (or no such file): every door answers 404."""


@dataclass(frozen=True)
class Download:
    key: str
    name: str
    content_type: str
    inline: bool  # images are shown; everything else is only downloaded


def download_for(*, user, attachment_id: int, thumbnail: bool = False) -> Download:
    """What `user` may download as attachment `attachment_id` (or its thumbnail), after the
    access policy (`Access.can_fetch_file`); NotFound otherwise."""
    attachment = (
        Attachment.objects.select_related("room", "message").filter(pk=attachment_id).first()
    )
    if attachment is None or (thumbnail and not attachment.thumbnail_key):
        raise NotFound
    access = policy.access(user, attachment.room)
    if access.can_fetch_file(uploader_id=attachment.uploader_id, message=attachment.message):
        raise NotFound
    if thumbnail:
        extension = attachment.thumbnail_key.rpartition(".")[2]
        return Download(attachment.thumbnail_key, f"thumbnail.{extension}", _IMAGE[extension], True)
    return Download(attachment.key, attachment.name, attachment.content_type, attachment.is_image)


_IMAGE = {"jpg": "image/jpeg", "png": "image/png"}


def response_for(download: Download) -> HttpResponseBase:
    """The answer that hands over the bytes: from nginx's internal location behind nginx
    (CHAT_MEDIA_ACCEL), from Django otherwise, or a short-lived signed link to the object store.
    A file is never shown as a page: nosniff, a sandbox, and a download for anything but
    images."""
    store = storage()
    disposition = content_disposition_header(not download.inline, download.name)
    if not isinstance(store, FileSystemStorage):
        url = store.url(
            download.key,
            parameters={
                "ResponseContentType": download.content_type,
                "ResponseContentDisposition": disposition,
            },
            expire=settings.CHAT_S3_URL_EXPIRY,
        )
        response: HttpResponseBase = HttpResponseRedirect(url)
        response["Cache-Control"] = "private, no-store"  # the link expires; ask again
    elif settings.CHAT_MEDIA_ACCEL:
        response = HttpResponse(content_type=download.content_type)
        response["X-Accel-Redirect"] = ACCEL_PREFIX + download.key
        response["Content-Disposition"] = disposition
    else:
        try:
            handle = store.open(download.key, "rb")
        except FileNotFoundError:
            raise NotFound from None
        response = FileResponse(handle, content_type=download.content_type)
        response["Content-Disposition"] = disposition
    if "Cache-Control" not in response:
        response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response
