"""What counts as one reaction emoji (PROTOCOL.md §6 `react`), from Unicode's emoji data as the
`emoji` package ships it; and the picker's names, served as a static file."""

import json
from functools import cache

import emoji

MAX_BYTES = 32
FULLY_QUALIFIED = emoji.STATUS["fully_qualified"]


@cache
def _qualified_by_name() -> dict[str, str]:
    return {
        data["en"]: text
        for text, data in emoji.EMOJI_DATA.items()
        if data["status"] == FULLY_QUALIFIED
    }


def clean(text: str) -> str | None:
    """`text` as one emoji in its fully-qualified form ("❤" becomes "❤️", so both toggle the
    same reaction), or None: not exactly one emoji (letters, digits, two emoji, text around
    one), or over 32 UTF-8 bytes."""
    if not isinstance(text, str) or not emoji.is_emoji(text):
        return None
    data = emoji.EMOJI_DATA.get(text)
    if data is not None and data["status"] != FULLY_QUALIFIED:
        text = _qualified_by_name().get(data["en"], text)
    if len(text.encode("utf-8")) > MAX_BYTES:
        return None
    return text


def picker_entries() -> list[list[str]]:
    """[emoji, its names] for the page's picker: fully-qualified emoji without skin-tone
    variants, names in words ("thumbs up +1 thumbsup")."""
    entries = []
    for text, data in emoji.EMOJI_DATA.items():
        name = data["en"]
        if data["status"] != FULLY_QUALIFIED or "skin_tone" in name:
            continue
        names = [name, *data.get("alias", [])]
        words = " ".join(dict.fromkeys(n.strip(":").replace("_", " ") for n in names))
        entries.append([text, words])
    return entries


def picker_json() -> str:
    """The picker's data file (chat/static/chat/emoji.json, written by `manage.py emoji_names`)."""
    return json.dumps(
        {"emoji_version": emoji.__version__, "emoji": picker_entries()},
        ensure_ascii=False,
        separators=(",", ":"),
    )
