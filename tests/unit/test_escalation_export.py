"""journalctl's export format, parsed in chunks: what JournalSource hands the notifier."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from razard.escalation.source import ExportParser

Fields = list[tuple[str, bytes]]


def export(entries: list[Fields]) -> bytes:
    """Serialise as journalctl does: text when printable UTF-8 on one line, else binary."""
    out = bytearray()
    for fields in entries:
        for name, value in fields:
            try:
                text = value.decode("utf-8")
                binary = not text.isprintable()
            except UnicodeDecodeError:
                binary = True
            if binary:
                out += name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
            else:
                out += name.encode() + b"=" + value + b"\n"
        out += b"\n"
    return bytes(out)


def entry(i: int, message: bytes = b"hello", **more: bytes) -> Fields:
    return [
        ("__CURSOR", f"s=abc;i={i:x}".encode()),
        ("__REALTIME_TIMESTAMP", str(1_700_000_000_000_000 + i).encode()),
        ("MESSAGE", message),
        *((k, v) for k, v in more.items()),
    ]


def parse(stream: bytes, sizes: list[int] | None = None, **kw: object) -> ExportParser:
    p = ExportParser(**kw)  # type: ignore[arg-type]
    pos = 0
    for size in sizes or [len(stream)]:
        p.feed(stream[pos : pos + size])
        pos += size
    p.feed(stream[pos:])
    p.close()
    return p


def test_text_fields_become_a_dict_per_entry_and_the_cursor_is_the_last_read() -> None:
    p = parse(export([entry(1, PRIORITY=b"3"), entry(2, b"a=b: c")]))
    assert p.entries == [
        {
            "__CURSOR": "s=abc;i=1",
            "__REALTIME_TIMESTAMP": "1700000000000001",
            "MESSAGE": "hello",
            "PRIORITY": "3",
        },
        {"__CURSOR": "s=abc;i=2", "__REALTIME_TIMESTAMP": "1700000000000002", "MESSAGE": "a=b: c"},
    ]
    assert (p.count, p.cursor) == (2, "s=abc;i=2")


def test_binary_fields_are_cut_by_length_whatever_they_hold() -> None:
    """A traceback's newlines, an empty line, '=' and bytes that are not UTF-8 inside a
    binary value do not end the field or the entry."""
    tb = b"Traceback (most recent call last):\n  File x\n\nKEY=not a field\nValueError: boom"
    stream = export([entry(1, tb, BLOB=b"\xff\xfe\n\n\x00"), entry(2, b"after", TAIL=b"ok\n")])
    p = parse(stream)
    assert [e["MESSAGE"] for e in p.entries] == [tb.decode(), "after"]
    assert p.entries[0]["BLOB"] == "\ufffd\ufffd\n\n\x00"
    assert "KEY" not in p.entries[0]
    assert p.entries[1]["TAIL"] == "ok\n"
    assert p.cursor == "s=abc;i=2"


def test_a_field_set_twice_keeps_its_first_value() -> None:
    e = entry(1, SYSLOG_IDENTIFIER=b"razar-vllm")
    e.append(("SYSLOG_IDENTIFIER", b"other"))
    e.append(("MESSAGE", b"second\nline"))
    p = parse(export([e]))
    assert p.entries[0]["SYSLOG_IDENTIFIER"] == "razar-vllm"
    assert p.entries[0]["MESSAGE"] == "hello"


def test_max_entries_stops_the_read_and_keep_filters_without_losing_the_cursor() -> None:
    stream = export([entry(i, f"m{i}".encode()) for i in range(10)])
    p = parse(stream, max_entries=4)
    assert (p.done, p.count, p.cursor) == (True, 4, "s=abc;i=3")
    assert [e["MESSAGE"] for e in p.entries] == ["m0", "m1", "m2", "m3"]
    odd = parse(stream, keep=lambda e: int(e["MESSAGE"][1:]) % 2 == 1)
    assert [e["MESSAGE"] for e in odd.entries] == ["m1", "m3", "m5", "m7", "m9"]
    assert (odd.count, odd.cursor) == (10, "s=abc;i=9")  # read past what it dropped


def test_an_entry_cut_off_by_the_end_of_the_stream_is_not_returned() -> None:
    stream = export([entry(1), entry(2, b"x\ny")])
    for cut in (len(stream) - 1, len(stream) - 5, len(stream) - 20):
        p = parse(stream[:cut])
        assert [e["__CURSOR"] for e in p.entries] == ["s=abc;i=1"], cut
        assert p.cursor == "s=abc;i=1"


_values = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=40).map(str.encode),
    st.binary(max_size=40),
)
_entries = st.lists(
    st.lists(
        st.tuples(st.from_regex(r"[A-Z_][A-Z0-9_]{0,11}", fullmatch=True), _values),
        max_size=6,
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(entries=_entries, sizes=st.lists(st.integers(1, 64), max_size=40))
def test_any_chunking_gives_the_entries_of_a_one_piece_read(
    entries: list[Fields], sizes: list[int]
) -> None:
    """However the pipe cuts the stream, the same entries come out, each field as written
    (first value of a repeated field; non-UTF-8 bytes replaced)."""
    full = [entry(i, b"m") + fields for i, fields in enumerate(entries)]
    stream = export(full)
    p = parse(stream, sizes)
    assert p.entries == parse(stream).entries
    assert p.count == len(full)
    for got, fields in zip(p.entries, full, strict=True):
        want: dict[str, str] = {}
        for name, value in fields:
            want.setdefault(name, value.decode("utf-8", "replace"))
        assert got == want
