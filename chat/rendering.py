"""Message bodies as HTML (PROTOCOL.md §6 `html`): CommonMark, then an allow-list sanitizer.

Rendered once per change (chat.services) and stored with RENDERER_VERSION; stored renders of an
older version are made again by `manage.py render_messages`. Two walls: markdown-it never passes
raw HTML through and links only http, https and mailto; nh3 (Ammonia) then keeps only the tags
and attributes below, whatever the first wall let by.

Mentions are found in the parsed text (never inside code or a link's address), so `@alice` in a
code span mentions nobody; the services decide which of the candidates are real readers.
"""

import re
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
    md.add_render_rule("mention", _render_mention)
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


def _render_mention(self, tokens: list[Token], idx: int, options, env) -> str:
    return f'<span class="mention">@{escape(tokens[idx].content)}</span>'


def _render_code_block(self, tokens: list[Token], idx: int, options, env) -> str:
    # A plain monospace block: the fence's info string ("python") is dropped, no highlighting.
    return f"<pre><code>{escape(tokens[idx].content)}</code></pre>\n"


_md = _parser()


def candidates_in(text: str) -> list[str]:
    """Every name that `@name` in `text` could mean: the longest match and the same with
    trailing punctuation taken off ("@bob." is bob, unless someone is called "bob.")."""
    names: list[str] = []
    for match in MENTION.finditer(text):
        name = match.group(1)
        while name:
            names.append(name)
            stripped = name.rstrip(".@+-")
            if stripped == name:
                break
            name = stripped
    return names


@dataclass
class Document:
    """One body parsed once: the candidate mentions, then the HTML for the mentions that hold."""

    body: str
    tokens: list[Token]
    too_deep: bool = False

    @property
    def candidates(self) -> list[str]:
        """Names written as @name outside code and link addresses, in order, at most 50."""
        found: list[str] = []
        for token in self._text_tokens():
            for name in candidates_in(token.content):
                if name not in found:
                    found.append(name)
        return found[: MAX_MENTIONS * 2]

    def mentions(self, readers: dict[str, str]) -> list[str]:
        """The usernames mentioned, in order, once each: of `readers` ({casefolded name:
        username}, those who may be mentioned), the longest that each `@name` spells."""
        found: list[str] = []
        for token in self._text_tokens():
            for match in MENTION.finditer(token.content):
                name = _longest_wanted(match.group(1), readers)
                if name is not None and readers[name.casefold()] not in found:
                    found.append(readers[name.casefold()])
        return found[:MAX_MENTIONS]

    def html(self, mentions: Iterable[str] = ()) -> str:
        if self.too_deep:
            return plain(self.body)
        wanted = {name.casefold(): name for name in mentions}
        if wanted:
            for block in self.tokens:
                if block.type == "inline" and block.children:
                    block.children = _wrap_mentions(block.children, wanted)
        return sanitize(_md.renderer.render(self.tokens, _md.options, {}))

    def _text_tokens(self) -> Iterable[Token]:
        for block in self.tokens:
            if block.type == "inline" and block.children:
                for token in block.children:
                    if token.type == "text":
                        yield token


def parse(body: str) -> Document:
    env: dict = {}
    tokens = _md.parse(body, env)
    return Document(body, tokens, too_deep=env.get("too_deep", False))


def render(body: str, mentions: Iterable[str] = ()) -> str:
    """The sanitized HTML of `body`, with `mentions` (usernames) wrapped as mention spans."""
    return parse(body).html(mentions)


def sanitize(html: str) -> str:
    """The second wall: only the allow-listed tags, attributes, classes and link schemes."""
    return nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        allowed_classes=CLASSES,
        url_schemes={"http", "https", "mailto"},
        link_rel=LINK_REL,
        strip_comments=True,
    )


def _wrap_mentions(children: list[Token], wanted: dict[str, str]) -> list[Token]:
    """Split text tokens around `@name` for the names in `wanted` (casefolded → as stored)."""
    out: list[Token] = []
    for token in children:
        if token.type != "text" or "@" not in token.content:
            out.append(token)
            continue
        text, start = token.content, 0
        for match in MENTION.finditer(text):
            name = _longest_wanted(match.group(1), wanted)
            if name is None:
                continue
            end = match.start() + 1 + len(name)
            if match.start() > start:
                out.append(_text(text[start : match.start()]))
            mention = Token("mention", "", 0)
            mention.content = wanted[name.casefold()]
            out.append(mention)
            start = end
        if start == 0:
            out.append(token)
            continue
        if start < len(text):
            out.append(_text(text[start:]))
    return out


def _longest_wanted(name: str, wanted: dict[str, str]) -> str | None:
    for candidate in candidates_in("@" + name):
        if candidate.casefold() in wanted:
            return candidate
    return None


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def plain(body: str) -> str:
    """Text as HTML without Markdown (notices, bodies nested too deep): one escaped paragraph,
    its line breaks kept."""
    return "<p>" + "<br>\n".join(escape(line) for line in body.split("\n")) + "</p>\n"
