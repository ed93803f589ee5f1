"""Rules for user text that is stored and shown: message bodies and room names.

Each returns a sentence saying what is wrong, or None; callers turn it into their own error
(`ChatError` for frames, `ValidationError` for forms), so every door applies the same rule.
"""

import re
import unicodedata

from django.conf import settings

# Characters that draw nothing: format characters (Cf: zero-width space, joiners, word joiner,
# BOM, bidi controls, tags…), controls, separators and white space, and the few letters and
# marks that render blank (Hangul fillers, Braille blank, combining grapheme joiner, variation
# selectors).
_BLANK_CATEGORIES = {"Cf", "Cc", "Zs", "Zl", "Zp"}
_BLANK_CHARACTERS = {"\u034f", "\u115f", "\u1160", "\u2800", "\u3164", "\uffa0"}
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")

# Bidirectional controls: embeddings and overrides (U+202A to U+202E), isolates (U+2066 to
# U+2069) and marks (U+200E, U+200F, U+061C). They make text read in another order than stored.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")

# Surrogates only exist in a Python str when they are unpaired (JSON's "\ud800"); neither UTF-8
# nor PostgreSQL can hold them. PostgreSQL's text cannot hold NUL either.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_blank(text: str) -> bool:
    """True when `text` would show nothing: only invisible characters and white space."""
    return all(
        char.isspace()
        or unicodedata.category(char) in _BLANK_CATEGORIES
        or char in _BLANK_CHARACTERS
        or _VARIATION_SELECTORS.match(char)
        for char in text
    )


def unstorable(text: str) -> str | None:
    if _UNSTORABLE.search(text):
        return "Text may not contain NUL characters or unpaired surrogates."
    return None


def most_stacked_marks(text: str) -> int:
    """The longest run of combining marks (Mn, Me) on one base character.

    Format characters (a zero-width joiner between marks) do not end a run: marks after them
    still stack on the same base in browsers.
    """
    longest = run = 0
    for char in text:
        category = unicodedata.category(char)
        if category in ("Mn", "Me"):
            run += 1
            longest = max(longest, run)
        elif category != "Cf":
            run = 0
    return longest


def too_many_marks(text: str) -> str | None:
    limit = settings.CHAT_MAX_COMBINING
    if most_stacked_marks(text) > limit:
        return (
            f"At most {limit} accents or other combining marks may stack on one character "
            "(real scripts need a few)."
        )
    return None


def name_problem(text: str) -> str | None:
    """What makes `text` unfit for a name (shown beside other text everywhere), or None."""
    if BIDI_CONTROLS.search(text):
        return "Names may not contain invisible text-direction controls."
    return unstorable(text) or too_many_marks(text)
