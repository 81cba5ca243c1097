"""A log line's signature: the line with everything that changes between repeats stripped.

Two occurrences of the same failure differ in timestamps, PIDs, addresses,
ports, hex ids, UUIDs and counters; their signatures do not. Different error
texts keep different signatures, because only those volatile tokens are
replaced and the words around them stay::

    >>> signature("2024-05-01T10:00:01Z worker[4121]: connect to 10.0.0.7:5432 failed")
    '<ts> worker[<n>]: connect to <addr> failed'

The order of the substitutions matters: a timestamp or an address is taken
whole before the number rule could cut it into pieces.
"""

from __future__ import annotations

import re
from typing import Final

#: Signatures are labels and dedup keys: long enough to tell errors apart, bounded.
MAX_SIGNATURE: Final = 200

_H4 = r"[0-9A-Fa-f]{1,4}"
_IPV4 = r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}"
# full (8 groups) or compressed (with ::) forms; an optional zone id (%eth0)
_IPV6 = (
    rf"(?:(?:{_H4}:){{7}}{_H4}"
    rf"|(?:{_H4}:){{1,7}}:(?:{_H4}(?::{_H4}){{0,6}})?"
    rf"|::(?:{_H4}(?::{_H4}){{0,6}})?)(?:%[0-9A-Za-z_.-]+)?"
)
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"

# (a character the pattern needs, or "" for none; the pattern; its placeholder): a rule
# whose character is absent from the line is skipped, and a line without digits skips all
_RULES: Final[tuple[tuple[str, re.Pattern[str], str], ...]] = (
    # timestamps: ISO-8601 / RFC 3339, syslog ("May  1 10:00:01"), bare clock times
    (
        "-",
        re.compile(
            r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2}\b)?"
        ),
        "<ts>",
    ),
    (
        ":",
        re.compile(
            r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}\s+"
            r"\d{2}:\d{2}:\d{2}\b"
        ),
        "<ts>",
    ),
    (":", re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<ts>"),
    (
        "-",
        re.compile(
            r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"
        ),
        "<uuid>",
    ),
    # addresses with a port first, so the port goes with them
    ("[", re.compile(rf"\[{_IPV6}\]:\d+"), "<addr>"),
    (":", re.compile(rf"\b{_IPV4}:\d+\b"), "<addr>"),
    (":", re.compile(rf"\b{_HOST}:\d+\b"), "<addr>"),
    (".", re.compile(rf"\b{_IPV4}\b"), "<ip>"),
    (":", re.compile(rf"(?<![\w:]){_IPV6}(?![\w:])"), "<ip>"),
    ("0", re.compile(r"\b0[xX][0-9A-Fa-f]+\b"), "<hex>"),
    # hex ids (commit hashes, container ids): 8+ hex digits, with a letter and a digit
    # (all digits: a number, below; all letters: a word such as "deadbeef" or "facade")
    ("", re.compile(r"\b(?=[0-9A-Fa-f]*\d)(?=[0-9A-Fa-f]*[A-Fa-f])[0-9A-Fa-f]{8,}\b"), "<hex>"),
    # a number on its own, not the digits inside a name (eth0, cuda12, sda1)
    ("", re.compile(r"\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"), "<n>"),
)
_DIGIT: Final = re.compile(r"\d")


def signature(message: str) -> str:
    """``message`` with timestamps, PIDs, addresses, hex ids, UUIDs and numbers replaced.

    The result is whitespace-collapsed, stripped and at most `MAX_SIGNATURE`
    characters, so it can be a label value and part of a dedup key.
    """
    text = message
    if _DIGIT.search(text):  # every rule needs a digit (IPv6 "::" aside, which has them too)
        for needle, pattern, replacement in _RULES:
            if needle in text:
                text = pattern.sub(replacement, text)
    return " ".join(text.split())[:MAX_SIGNATURE]
