"""Message bodies as HTML (chat/rendering.py) and reaction emoji (chat/reactions.py): no database.

PROTOCOL.md §6: CommonMark with raw HTML never passed through, links only http/https/mailto,
mentions as spans; the sanitizer's allow-list holds whatever the Markdown stage lets by.
"""

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import reactions, rendering

ROOT = Path(__file__).resolve().parent.parent
REL = 'rel="nofollow noopener noreferrer"'

CASES = [
    ("plain words", "<p>plain words</p>\n"),
    ("*em* **strong** `code`", "<p><em>em</em> <strong>strong</strong> <code>code</code></p>\n"),
    ("line one\nline two", "<p>line one<br>\nline two</p>\n"),
    ("> quoted", "<blockquote>\n<p>quoted</p>\n</blockquote>\n"),
    ("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n"),
    ("3. third", '<ol start="3">\n<li>third</li>\n</ol>\n'),
    ("```python\nx = '<b>'\n```", "<pre><code>x = '&lt;b&gt;'\n</code></pre>\n"),
    ("    indented code", "<pre><code>indented code\n</code></pre>\n"),
    (
        "[site](https://e.com/a?b=1&c=2)",
        f'<p><a href="https://e.com/a?b=1&amp;c=2" {REL}>site</a></p>\n',
    ),
    ("see http://e.com", f'<p>see <a href="http://e.com" {REL}>http://e.com</a></p>\n'),
    ("[mail](mailto:a@example.com)", f'<p><a href="mailto:a@example.com" {REL}>mail</a></p>\n'),
    # Hostile: raw HTML is text, other schemes stay text, images are not fetched.
    ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"),
    ('<img src=x onerror="alert(1)">', '<p>&lt;img src=x onerror="alert(1)"&gt;</p>\n'),
    ("<a href='javascript:x'>x</a>", "<p>&lt;a href='javascript:x'&gt;x&lt;/a&gt;</p>\n"),
    ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>\n"),
    ("[x](JAVASCRIPT:alert(1))", "<p>[x](JAVASCRIPT:alert(1))</p>\n"),
    ("[x](data:text/html;base64,PHNjcmlwdD4=)", "<p>[x](data:text/html;base64,PHNjcmlwdD4=)</p>\n"),
    ("[x](vbscript:msgbox)", "<p>[x](vbscript:msgbox)</p>\n"),
    ("[x](/relative)", "<p>[x](/relative)</p>\n"),
    ("<javascript:alert(1)>", "<p>&lt;javascript:alert(1)&gt;</p>\n"),
    ("![pixel](https://t.io/p.gif)", f'<p>!<a href="https://t.io/p.gif" {REL}>pixel</a></p>\n'),
    (
        '[x](https://e.com "t" on=1)',
        f'<p>[x](<a href="https://e.com" {REL}>https://e.com</a> "t" on=1)</p>\n',
    ),
    ("`" * 4000, "<pre><code></code></pre>\n"),
    ("```\nnever closed\n<b>", "<pre><code>never closed\n&lt;b&gt;</code></pre>\n"),
    ("<!-- hidden -->", "<p>&lt;!-- hidden --&gt;</p>\n"),
]


@pytest.mark.parametrize(("body", "html"), CASES, ids=[c[0][:30] for c in CASES])
def test_a_body_renders_to_this_html(body, html):
    assert rendering.render(body) == html


def test_a_link_loses_the_bidi_controls_that_would_turn_it_around():
    html = rendering.render("see \u202ehttps://example.com/\u202egpj.exe now")
    assert html == (
        f'<p>see \u202e<a href="https://example.com/gpj.exe" {REL}>https://example.com/gpj.exe</a>'
        " now</p>\n"
    )


def test_quotes_nested_past_the_parsers_depth_show_as_plain_text_not_lose_it():
    body = "> " * 1000 + "the end"
    html = rendering.render(body)
    assert "the end" in html
    assert "<blockquote>" not in html
    assert html.startswith("<p>&gt; &gt; ")
    # Within the depth, quotes are quotes.
    assert rendering.render("> " * 5 + "x").count("<blockquote>") == 5


def test_mentions_are_wrapped_only_for_the_names_given_and_never_in_code():
    html = rendering.render("hi @alice, @bob and `@alice` and @carol", ["alice", "bob"])
    assert html == (
        '<p>hi <span class="mention">@alice</span>, <span class="mention">@bob</span> and '
        "<code>@alice</code> and @carol</p>\n"
    )


@pytest.mark.parametrize(
    ("body", "candidates"),
    [
        ("thanks @bob.", ["bob.", "bob"]),
        ("@a_b: @c-d-", ["a_b", "c-d-", "c-d"]),
        ("mail bob@example.com", []),
        ("`@alice` [@x](https://e.com/@y)", ["x"]),
        ("@@alice", ["@alice"]),  # "@" is a username character in Django
        ("(@alice)", ["alice"]),
    ],
)
def test_candidate_mentions_are_word_bounded_and_outside_code(body, candidates):
    assert rendering.parse(body).candidates == candidates


def test_a_mention_takes_the_longest_name_that_is_a_reader():
    document = rendering.parse("ask @bob.smith. or @bob.")
    readers = {"bob": "bob", "bob.smith": "Bob.Smith"}
    assert document.mentions(readers) == ["Bob.Smith", "bob"]
    assert document.html(["Bob.Smith", "bob"]) == (
        '<p>ask <span class="mention">@Bob.Smith</span>. or <span class="mention">@bob</span>.'
        "</p>\n"
    )


def test_a_mention_cannot_smuggle_markup():
    html = rendering.render("@x", ['x"><script>'])
    assert "<script>" not in html


def test_the_sanitizer_strips_what_the_allow_list_lacks():
    dirty = (
        '<p onclick="x"><a href="javascript:alert(1)">a</a><span class="evil mention">m</span>'
        '<img src="x"><iframe src="https://e.com"></iframe><code class="language-py">c</code></p>'
    )
    assert rendering.sanitize(dirty) == (
        f'<p><a {REL}>a</a><span class="mention">m</span><code>c</code></p>'
    )


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.seen.append((tag, attrs))


ALLOWED_ATTRIBUTES = {**rendering.ATTRIBUTES, "a": {"href", "rel"}, "span": {"class"}}
MARKDOWN = st.lists(
    st.sampled_from(
        [
            *"*_`#>-+=[]()!<>:/\\\"'&;@ \n\t.1aZ",
            *["http://", "https://e.com", "javascript:", "data:", "mailto:", "<script>", "```"],
            *["<img src=x onerror=1>", "&#x3C;", "\u202e", "@alice", "<a href='x'>", "    "],
        ]
    ),
    max_size=150,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(MARKDOWN)
def test_any_markdown_renders_to_allow_listed_tags_and_attributes_only(body):
    html = rendering.render(body, ["alice"])
    parser = Tags()
    parser.feed(html)
    for tag, attrs in parser.seen:
        assert tag in rendering.TAGS, (body, html)
        for name, value in attrs:
            assert name in ALLOWED_ATTRIBUTES.get(tag, set()), (body, html)
            if name == "href":
                assert value.lower().startswith(("http:", "https:", "mailto:")), (body, html)
            if name == "class":
                assert value == "mention", (body, html)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_rendering_never_raises_on_any_text(body):
    document = rendering.parse(body)
    document.mentions({"alice": "alice"})
    assert isinstance(document.html(["alice"]), str)


# --- reaction emoji ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("👍", "👍"),
        ("👍🏽", "👍🏽"),
        ("❤", "❤️"),  # the unqualified form toggles the same reaction as the qualified one
        ("❤️", "❤️"),
        ("🏳️‍🌈", "🏳️‍🌈"),
        ("🇫🇷", "🇫🇷"),
        ("1️⃣", "1️⃣"),
        ("a", None),
        ("1", None),
        ("#", None),
        ("", None),
        ("👍👍", None),
        (" 👍", None),
        ("👍x", None),
        ("\u200d", None),
        ("<b>", None),
        ("👨‍👩‍👧‍👦" * 2, None),
    ],
)
def test_a_reaction_is_one_emoji(text, stored):
    assert reactions.clean(text) == stored


def test_a_reaction_is_at_most_32_bytes():
    longest = max((e for e in reactions.emoji.EMOJI_DATA), key=lambda e: len(e.encode()))
    assert len(longest.encode()) > reactions.MAX_BYTES
    assert reactions.clean(longest) is None


def test_the_pickers_names_file_is_what_the_emoji_package_says():
    """chat/static/chat/emoji.json is written by `manage.py emoji_names`: run it again after
    upgrading the emoji package."""
    committed = (ROOT / "chat" / "static" / "chat" / "emoji.json").read_text(encoding="utf-8")
    assert committed == reactions.picker_json() + "\n"
    entries = json.loads(committed)["emoji"]
    names = dict(entries)
    assert "thumbs up" in names["👍"]
    assert all(reactions.clean(text) == text for text, _ in entries[:200])
