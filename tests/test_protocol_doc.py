"""docs/protocol.md, the contract for outside clients, cannot drift from the code.

The code's side is read from its source (every `ChatError("code", ...)`, close code and frame
`type` literal, and the close/error enums if there are any), the document's side from its tables.
Everything the server sends or accepts must be documented, and everything §2 promises (the status
table says §1 to §3 are implemented) must be in the code. The document's shared part must be the
shared contract word for word, when that file is beside the checkout.
"""

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
SHARED = ROOT.parent / "shared" / "PROTOCOL.md"
STATUS = re.compile(r"\n## Status in this server\n.*?(?=\n## 1\. )", re.S)
# Codes an application may define (RFC 6455 §7.4.2); the standard ones are the WebSocket's own.
APPLICATION_CLOSE_CODES = range(4000, 5000)
ENUMS = re.compile(r"Close(Code)?|ErrorCode")
# Defined in the contract's prose, not in a table (§6 `react`, §9 reports): each must still be
# named in the text, so this list cannot hide a code the contract lacks.
IN_PROSE = {
    "server_frames": {"reported"},
    "client_frames": {"report"},
    "errors": {"too_many"},
}


@dataclass
class Vocabulary:
    server_frames: set[str] = field(default_factory=set)
    client_frames: set[str] = field(default_factory=set)
    errors: set[str] = field(default_factory=set)
    close_codes: set[int] = field(default_factory=set)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _constant(node: ast.AST | None, kind: type) -> object:
    if isinstance(node, ast.Constant) and type(node.value) is kind:
        return node.value
    return None


def code_vocabulary() -> Vocabulary:
    found = Vocabulary()
    for path in sorted((ROOT / "chat").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                if _name(node.func) == "ChatError" and node.args:
                    code = _constant(node.args[0], str)
                    if code:
                        found.errors.add(code)
                for keyword in node.keywords:
                    if keyword.arg == "code" and _constant(keyword.value, int):
                        found.close_codes.add(keyword.value.value)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    # `type` of a frame (channel-layer events have dotted types: not frames).
                    kind = _constant(value, str)
                    if _constant(key, str) == "type" and kind and "." not in kind:
                        found.server_frames.add(kind)
                    if _constant(key, str) == "code" and _constant(value, int):
                        found.close_codes.add(value.value)
            elif isinstance(node, ast.ClassDef) and re.fullmatch(
                r"Close(Code)?|ErrorCode", node.name
            ):
                for statement in node.body:
                    if isinstance(statement, ast.Assign):
                        value = statement.value
                        if _constant(value, int):
                            found.close_codes.add(value.value)
                        elif _constant(value, str):
                            found.errors.add(value.value)
            elif isinstance(node, ast.FunctionDef) and node.name == "parse":
                # The client frames the parser accepts: `kind == "post"`, ...
                for compare in ast.walk(node):
                    if isinstance(compare, ast.Compare) and isinstance(compare.ops[0], ast.Eq):
                        for side in (compare.left, *compare.comparators):
                            if _constant(side, str):
                                found.client_frames.add(side.value)
    found.close_codes &= set(APPLICATION_CLOSE_CODES)
    return found


def tables(text: str):
    """(heading, header cells, first cells of the rows) for every table, under its nearest
    `##`/`###` heading."""
    heading, rows = "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if rows:
            header, _separator, *body = rows
            yield heading, header, [row[0] for row in body]
            rows = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()


def backticked(cells: list[str]) -> set[str]:
    return {match.group(1) for cell in cells if (match := re.match(r"`([^`]+)`", cell))}


def doc_vocabulary(text: str) -> Vocabulary:
    found = Vocabulary()
    for heading, header, first_cells in tables(text):
        if heading == "Server → client" or header[0] == "server frame":
            found.server_frames |= backticked(first_cells)
        elif heading == "Client → server" or header[0] == "client frame":
            found.client_frames |= backticked(first_cells)
        elif header[0] == "code":
            found.errors |= backticked(first_cells)
    for kind, names in IN_PROSE.items():
        getattr(found, kind).update(name for name in names if f"`{name}`" in text)
    found.close_codes = {
        int(code) for code in re.findall(r"`(\d{4})`", text) if int(code) in APPLICATION_CLOSE_CODES
    }
    return found


def contract() -> str:
    """docs/protocol.md without the project's status section: the shared contract's text."""
    text = DOC.read_text()
    assert STATUS.search(text), "docs/protocol.md lost its status section"
    return STATUS.sub("", text, count=1)


def section(text: str, number: int) -> str:
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_code_is_read_as_the_server_speaks():
    code = code_vocabulary()
    # If the code moves its literals somewhere this reader does not look, say so here.
    assert {"ready", "message", "error"} <= code.server_frames
    assert {"post", "history"} <= code.client_frames
    assert {"invalid", "rate_limited"} <= code.errors
    assert {4401, 4403, 4404} <= code.close_codes


def test_every_frame_type_close_code_and_error_code_the_server_uses_is_documented():
    code, doc = code_vocabulary(), doc_vocabulary(contract())
    assert code.server_frames - doc.server_frames == set()
    assert code.client_frames - doc.client_frames == set()
    assert code.errors - doc.errors == set()
    assert code.close_codes - doc.close_codes == set()


def test_what_the_contract_defines_in_prose_is_named_there():
    text = contract()
    for names in IN_PROSE.values():
        for name in names:
            assert f"`{name}`" in text, name


def test_everything_section_2_promises_is_in_the_code():
    """§1 to §3 are marked implemented: no frame, error or close code of §2 is missing."""
    code, promised = code_vocabulary(), doc_vocabulary(section(contract(), 2))
    assert promised.server_frames - code.server_frames == set()
    assert promised.client_frames - code.client_frames == set()
    assert promised.errors - code.errors == set()
    assert promised.close_codes - code.close_codes == set()


def test_the_status_table_names_every_section():
    status = STATUS.search(DOC.read_text()).group(0)
    for number in range(1, 10):
        assert re.search(rf"^\| §{number} ", status, re.M), f"§{number}"


def test_the_document_is_the_shared_contract_word_for_word():
    # CI lays shared/ beside the clone; a checkout without it cannot tell whether the document
    # still agrees, and says so rather than passing quietly.
    if not SHARED.exists():
        pytest.fail(f"no shared contract at {SHARED}: check out shared/ beside the repository")
    shared = SHARED.read_text()
    ours = contract()
    assert shared.splitlines()[0] == ours.splitlines()[0], (
        f"the shared contract is now {shared.splitlines()[0]!r}: update docs/protocol.md"
    )
    assert ours == shared
