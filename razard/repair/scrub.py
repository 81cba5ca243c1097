"""Masking secrets in what razar keeps of an agent's words (rationale, errors)."""

from __future__ import annotations

import re
from typing import Final

from razard.journal import redact

_DSN_PASSWORD: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@")


def scrub(text: str) -> str:
    """``text`` with bearer tokens, ``password=``-style secrets and the password of a
    ``scheme://user:password@host`` URL (a DSN a model echoed from an artifact) masked."""
    return _DSN_PASSWORD.sub(r"\1***@", redact(text))
