"""Message bodies as HTML (PROTOCOL.md §6 `html`): CommonMark, then an allow-list sanitizer.

Rendered once per change (chat.services) and stored with RENDERER_VERSION; stored renders of an
older version are made again by `manage.py render_messages`. Two walls: markdown-it never passes
raw HTML through and links only http, https and mailto; nh3 (Ammonia) then keeps only the tags
and attributes below, whatever the first wall let by.

Mentions are found in the parsed text (never inside code or a link's address), so `@alice` in a
code span mentions nobody; the services decide which of the candidates are real readers.
"""

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

# Bump when the output for some input changes (rules, options, allow-list): stored renders of an
# older version are then made again by `manage.py render_messages`.
RENDERER_VERSION = 1

SCHEMES = ("http:", "https:", "mailto:")
LINK_REL = "nofollow noopener noreferrer"

TAGS = {
    "p", "br", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a", "span",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr",
}  # fmt: skip
ATTRIBUTES = {"a": {"href"}, "ol": {"start"}}
CLASSES = {"span": {"mention"}}

# A mention: @ and a Django username (letters, digits, . @ + - _), not glued to a word before it.
# Trailing dots and dashes are punctuation ("thanks @bob.") unless the name really has them.
MENTION = re.compile(r"(?<![\w@.+-])@([\w.@+-]{1,150})")
MAX_MENTIONS = 50

# Bidi controls (embeddings, overrides, isolates, marks): inside a link they only serve to make
# it read in another order than it goes ("https://e.com/\u202egpj.exe" shows as "exe.jpg").
# Links lose them, in their text and their address (raw or percent-encoded).
BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
BIDI_ENCODED = re.compile(r"%E2%80%A[A-E]|%E2%81%A[6-9]|%E2%80%8[EF]|%D8%9C", re.I)


def _valid_link(url: str) -> bool:
    return url.strip().lower().startswith(SCHEMES)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "breaks": True})
    md.enable("linkify")
    md.disable("image")  # no remote images in a chat line (tracking pixels); `![x](u)` is a link
    md.validateLink = _valid_link  # others (javascript:, data:, relative paths) stay text
    md.add_render_rule("fence", _render_code_block)
    md.add_render_rule("code_block", _render_code_block)
    md.core.ruler.push("links_without_bidi", _links_without_bidi)
    tokenize = md.block.tokenize

    def tokenize_noting_depth(state, start_line: int, end_line: int, *args) -> None:
        # Past maxNesting markdown-it drops the rest of the text unseen ("> > > ... x" 1,000
        # deep): note it, and `Document.html` shows such a body as plain text instead.
        if state.level >= state.md.options.maxNesting and start_line < end_line:
            state.env["too_deep"] = True
        tokenize(state, start_line, end_line, *args)

    md.block.tokenize = tokenize_noting_depth
    return md


def _links_without_bidi(state) -> None:
    for block in state.tokens:
        inside = False
        for token in block.children or ():
            if token.type == "link_open":
                inside = True
                href = token.attrGet("href")
                if isinstance(href, str):
                    token.attrSet("href", BIDI_ENCODED.sub("", BIDI.sub("", href)))
            elif token.type == "link_close":
                inside = False
            elif inside and token.type == "text":
                token.content = BIDI.sub("", token.content)


def _render_code_block(self, tokens: list[Token], idx: int, options, env) -> str:
    # A plain monospace block: the fence's info string ("python") is dropped, no highlighting.
    return f"<pre><code>{escape(tokens[idx].content)}</code></pre>\n"


_md = _parser()


def candidates_in(text: str) -> list[str]:
    """Every name that `@name` in `text` could mean: the longest match and the same with
    trailing punctuation taken off ("@bob." is bob, unless someone is called "bob.")."""
    return [name for match in MENTION.finditer(text) for name in _spellings(match.group(1))]


def _spellings(name: str) -> tuple[str, ...]:
    """What a written `@name` may stand for, longest first: trailing . @ + - taken off one run
    at a time ("bob.smith." is "bob.smith." or "bob.smith")."""
    names = [name]
    while (stripped := name.rstrip(".@+-")) and stripped != name:
        names.append(stripped)
        name = stripped
    return tuple(names)


@dataclass(frozen=True)
class Document:
    """One body parsed, rendered and sanitized once, with its mentions left open.

    Each `@name` written outside code and link addresses is a mark in the sanitized HTML; which
    of them are mentions depends on who reads the room (a database question), so `mentions` and
    `html` answer it later without parsing again: the costly part can run on any thread, the
    cheap part where the readers are known.
    """

    body: str
    # Every `@name` written outside code and link addresses (without the "@"), in order, each
    # as the spellings it may stand for (longest first).
    written: tuple[tuple[str, ...], ...]
    # The sanitized HTML, with an int where written[int] goes.
    parts: tuple[str | int, ...]

    @property
    def candidates(self) -> list[str]:
        """Names written as @name outside code and link addresses, in order, at most 100."""
        return list(dict.fromkeys(name for names in self.written for name in names))[
            : MAX_MENTIONS * 2
        ]

    def mentions(self, readers: dict[str, str]) -> list[str]:
        """The usernames mentioned, in order, once each: of `readers` ({casefolded name:
        username}, those who may be mentioned), the longest that each `@name` spells."""
        found: dict[str, None] = {}
        for names in dict.fromkeys(self.written):  # in order, each spelling once
            name = _longest_wanted(names, readers)
            if name is not None:
                found[readers[name.casefold()]] = None
        return list(found)[:MAX_MENTIONS]

    def html(self, mentions: Iterable[str] = ()) -> str:
        """The sanitized HTML with `mentions` (usernames) as mention spans."""
        wanted = {name.casefold(): name for name in mentions}
        slots = {names: _slot(names, wanted) for names in dict.fromkeys(self.written)}
        return "".join(
            part if isinstance(part, str) else slots[self.written[part]] for part in self.parts
        )


def parse(body: str) -> Document:
    """Parse, render and sanitize `body` once (the costly part: bench/render.py)."""
    env: dict = {}
    tokens = _md.parse(body, env)
    # Each `@name` in the text becomes a mark no body holds: a nonce around its number. The
    # renderer and the sanitizer pass such text as it is (hex digits need no escaping).
    while True:
        nonce = secrets.token_hex(6)
        if nonce not in body:
            break
    written = _mark_mentions(tokens, nonce)
    if env.get("too_deep"):
        # Past maxNesting markdown-it dropped the rest unseen: the body shows as plain text.
        return Document(body, tuple(written), (plain(body),))
    html = sanitize(_md.renderer.render(tokens, _md.options, {}))
    if not written:
        return Document(body, (), (html,))
    pieces = re.split(f"{nonce}(\\d+){nonce}", html)
    parts: list[str | int] = [
        int(piece) if i % 2 else piece for i, piece in enumerate(pieces) if piece or i % 2
    ]
    if [p for p in parts if isinstance(p, int)] != list(range(len(written))):
        # Never seen (the sanitizer keeps text as it is); were a mark lost, plain text is safe.
        return Document(body, tuple(written), (plain(body),))
    return Document(body, tuple(written), tuple(parts))


def _mark_mentions(tokens: list[Token], nonce: str) -> list[tuple[str, ...]]:
    """Put a numbered mark in place of each `@name` of the text tokens (not code, not a link's
    address); returns the spellings of each, by number."""
    written: list[tuple[str, ...]] = []

    def mark(match: re.Match) -> str:
        written.append(_spellings(match.group(1)))
        return f"{nonce}{len(written) - 1}{nonce}"

    for block in tokens:
        if block.type != "inline" or not block.children:
            continue
        for token in block.children:
            if token.type == "text" and "@" in token.content:
                token.content = MENTION.sub(mark, token.content)
    return written


def render(body: str, mentions: Iterable[str] = ()) -> str:
    """The sanitized HTML of `body`, with `mentions` (usernames) wrapped as mention spans."""
    return parse(body).html(mentions)


_CLEANER = nh3.Cleaner(
    tags=TAGS,
    attributes=ATTRIBUTES,
    allowed_classes=CLASSES,
    url_schemes={"http", "https", "mailto"},
    link_rel=LINK_REL,
    strip_comments=True,
)


def sanitize(html: str) -> str:
    """The second wall: only the allow-listed tags, attributes, classes and link schemes."""
    return _CLEANER.clean(html)


def _slot(names: tuple[str, ...], wanted: dict[str, str]) -> str:
    """A written `@name` as HTML: a mention span for the longest spelling in `wanted` (as
    stored there), the rest as text. Its characters (word characters and . @ + -) need no
    escaping; a stored username is escaped all the same."""
    name = _longest_wanted(names, wanted)
    if name is None:
        return "@" + names[0]
    mention = escape(wanted[name.casefold()], quote=False)
    return f'<span class="mention">@{mention}</span>{names[0][len(name) :]}'


def _longest_wanted(names: tuple[str, ...], wanted: dict[str, str]) -> str | None:
    for name in names:
        if name.casefold() in wanted:
            return name
    return None


def plain(body: str) -> str:
    """Text as HTML without Markdown (notices, bodies nested too deep): one escaped paragraph,
    its line breaks kept."""
    return "<p>" + "<br>\n".join(escape(line) for line in body.split("\n")) + "</p>\n"
