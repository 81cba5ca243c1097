"""Signature normalisation on real-looking log lines: volatile parts go, the error stays."""

from __future__ import annotations

import string
import uuid
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from razard.escalation.signature import MAX_SIGNATURE, signature

# Error texts as components print them, with {slots} where the volatile parts go.
TEMPLATES = [
    "{ts} vllm[{pid}]: CUDA error: out of memory (tried to allocate {n} MiB) at {hex}",
    "{ts} gateway[{pid}]: dial tcp {ip4}:{port}: connect: connection refused",
    "{ts} scheduler: request {uuid} failed after {n} retries",
    "{ts} api[{pid}]: listen tcp [{ip6}]:{port}: bind: address already in use",
    "Traceback (most recent call last): KeyError: 'model_path' in worker {pid}",
    "{ts} db-proxy: upstream db{n}.example.com:{port} timed out after {n}ms",
    "{ts} trainer[{pid}]: segfault at {hex} ip {hex} sp {hex} error 4 in libcuda.so",
    "probe failed ({n}/3): HTTP 503 from http://{ip4}:{port}/health",
]

ERRORS = [
    "CUDA error: out of memory",
    "connection refused",
    "permission denied opening the model file",
    "address already in use",
    "certificate has expired",
    "no space left on device",
]

dates = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1))
timestamps = st.one_of(
    dates.map(lambda d: d.isoformat() + "Z"),
    dates.map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S,%f")),
    dates.map(lambda d: d.strftime("%b %d %H:%M:%S")),
)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.sampled_from(["::1", "fe80::1", "2001:db8::7", "2001:db8:0:0:1:0:0:1", "fd00::a:b"])
hex_ids = st.integers(1, 2**64).map(lambda i: f"0x{i:x}")
volatile = st.fixed_dictionaries(
    {
        "ts": timestamps,
        "pid": st.integers(1, 4_194_304).map(str),
        "n": st.integers(0, 10**9).map(str),
        "hex": hex_ids,
        "ip4": ipv4,
        "ip6": ipv6,
        "port": st.integers(1, 65535).map(str),
        "uuid": st.builds(lambda: str(uuid.uuid4())),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TEMPLATES), volatile, volatile)
def test_lines_differing_only_in_volatile_parts_share_a_signature(
    template: str, a: dict[str, str], b: dict[str, str]
) -> None:
    """Two occurrences of one error with other times, PIDs, addresses, ids share a signature."""
    assert signature(template.format(**a)) == signature(template.format(**b))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ERRORS), st.sampled_from(ERRORS), volatile)
def test_different_error_texts_keep_different_signatures(
    e1: str, e2: str, v: dict[str, str]
) -> None:
    """The same surroundings with different error texts do not share a signature."""
    line = "{ts} app[{pid}]: connect to {ip4}:{port}: {err}"
    s1 = signature(line.format(err=e1, **v))
    s2 = signature(line.format(err=e2, **v))
    assert (s1 == s2) == (e1 == e2)


@given(st.text(alphabet=string.printable, max_size=2000))
def test_any_text_gives_a_bounded_single_line_signature(text: str) -> None:
    """Whatever a component prints, the signature is one stripped line of bounded length."""
    sig = signature(text)
    assert len(sig) <= MAX_SIGNATURE
    assert "\n" not in sig and sig == sig.strip()


def test_examples_read_as_a_person_expects() -> None:
    """Timestamps, PIDs, addresses, hex ids and numbers become placeholders; words stay."""
    assert (
        signature("2024-05-01T10:00:01Z worker[4121]: connect to 10.0.0.7:5432 failed")
        == "<ts> worker[<n>]: connect to <addr> failed"
    )
    assert signature("segfault at 0x7f3a2b00 in libcuda.so") == "segfault at <hex> in libcuda.so"
    assert signature("container 3f9c2d1e8a7b exited") == "container <hex> exited"
    assert signature("eth0 down on gpu-node-3") == "eth0 down on gpu-node-<n>"
