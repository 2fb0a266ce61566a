"""A JSON object document read member by member, its one large member value by value (`scan_document`).

`json.loads` of a 50,000-tag ledger needs the whole text (18 MB, and its bytes while they are decoded) and
then builds the whole document (~40 MB of dicts and strings) before any entry is looked at. Here the file is
read a chunk at a time and the large member's values (a ledger's images) are parsed one at a time by the
stdlib's own scanner and handed over as they are parsed, so only about a chunk of text and one image's raw
JSON exist at a time. The grammar is json's; a document this scanner does not read is left to `json.loads`
by the caller, which then reports exactly what it always did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TextIO

CHUNK = 1 << 20  # characters read at a time
_WS = re.compile(r"[ \t\n\r]*")
_decode = json.JSONDecoder().raw_decode  # json.loads's own scanner (the C one), one value at an index

STREAMED: Any = object()  # what scan_document returns for the large member when it was an object


class Unreadable(Exception):
    """Not a JSON object this scanner reads (invalid JSON, or not an object at the top): use json.loads."""


class _Window:
    """The part of the document not parsed yet (from a position in `s` on), read as needed."""

    def __init__(self, text: str | TextIO) -> None:
        self.read: Callable[[int], str] = text.read if not isinstance(text, str) else self._once(text)
        self.s = ""
        self.eof = False

    @staticmethod
    def _once(text: str) -> Callable[[int], str]:
        rest = [text]
        return lambda size: rest.pop() if rest else ""  # the whole text, then the end

    def more(self, at: int) -> int:
        """Reads on (at least a chunk, and at least as much as the window holds: linear time however long a
        value is), dropping what is before `at`; returns where `at` is now. Raises Unreadable at the end."""
        if self.eof:
            raise Unreadable
        chunk = self.read(max(CHUNK, len(self.s) - at))
        if not chunk:
            self.eof = True
            raise Unreadable
        self.s = self.s[at:] + chunk
        return 0

    def char(self, at: int) -> tuple[str, int]:
        while at >= len(self.s):
            at = self.more(at)
        return self.s[at], at

    def skip(self, at: int) -> int:
        """Past the whitespace at `at` (reading on while the window ends in whitespace)."""
        while True:
            match = _WS.match(self.s, at)
            end = match.end() if match else at
            if end < len(self.s) or self.eof:
                return end
            try:
                at = self.more(end)
            except Unreadable:
                return len(self.s)

    def value(self, at: int) -> tuple[Any, int]:
        """The JSON value at `at` and where it ends. A value that fails or ends with the window (a number
        could go on) is parsed again with more text; only the document's end makes it Unreadable."""
        while True:
            try:
                value, end = _decode(self.s, at)
                if end < len(self.s):
                    return value, end
            except ValueError:  # json.JSONDecodeError
                pass
            at = self.more(at)


def _members(w: _Window, at: int, member: Callable[[str, int], int]) -> int:
    """w.s[at] is an object's "{": calls member(key, start of its value) for each member, which returns where
    the value ends; returns the position after the closing "}"."""
    nextchar, at = w.char(w.skip(at + 1))
    if nextchar == "}":
        return at + 1
    while True:
        if nextchar != '"':
            raise Unreadable
        key, at = w.value(at)  # a JSON string
        nextchar, at = w.char(w.skip(at))
        if nextchar != ":":
            raise Unreadable
        at = member(key, w.skip(at + 1))
        nextchar, at = w.char(w.skip(at))
        if nextchar == "}":
            return at + 1
        if nextchar != ",":
            raise Unreadable
        nextchar, at = w.char(w.skip(at + 1))


def scan_document(text: str | TextIO, large: str, start: Callable[[], None],
                  item: Callable[[str, Any], None]) -> dict[str, Any]:
    """json.loads of a text (or of an open file's, read a chunk at a time) holding an object, except that
    the member named `large`, when it is an object, is not built: start() is called where its value begins
    (again for a repeated key: the last one counts, as in json.loads) and item(key, value) for each of its
    members in document order (a key may repeat too).

    Returns the other members, and `large` mapped to STREAMED when it was an object. Raises Unreadable for
    anything else (invalid JSON included), without a position: json.loads says what is wrong.
    """
    w = _Window(text)
    top: dict[str, Any] = {}

    def member(key: str, at: int) -> int:
        nextchar, at = w.char(at)
        if key == large and nextchar == "{":
            start()
            top[key] = STREAMED

            def one(name: str, value_at: int) -> int:
                value, value_end = w.value(value_at)
                item(name, value)
                return value_end

            return _members(w, at, one)
        top[key], at = w.value(at)
        return at

    try:
        first, at = w.char(w.skip(0))
        if first != "{":
            raise Unreadable
        at = _members(w, at, member)
    except (ValueError, RecursionError):  # a decoding error: json.loads (or reading the text) says it
        raise Unreadable from None
    if w.skip(at) != len(w.s):  # anything but whitespace after the object
        raise Unreadable
    return top
