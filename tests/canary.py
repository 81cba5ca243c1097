"""Canary tokens: every razard a test starts carries these secrets, and none may leak.

``RSTAR_TOKEN`` and ``KIMI_K2_TOKEN`` (and any token a test makes with
`token`) start with :data:`PREFIX`. At the end of the session
``tests/conftest.py`` searches the journal entries written during the run and
every file the tests left under pytest's temporary directory (state, razar.log,
JSON-lines logs, escalations, outbox, razard's stderr) for the prefix and fails
the run on a hit; `tests.integration.harness` also checks every ``razarctl``
output and metrics page as it reads them. Files that hold a token on purpose
(``*.token``, ``*token*``) are the only ones skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterable
from pathlib import Path

PREFIX = "rzcanary"
_RUN = secrets.token_hex(4)


def token(name: str) -> str:
    """A secret for ``name`` that the end-of-run search will recognise."""
    return f"{PREFIX}-{name}-{_RUN}-{secrets.token_hex(8)}"


#: put into the environment of every razard the integration harness starts
TOKENS: dict[str, str] = {"RSTAR_TOKEN": token("rstar"), "KIMI_K2_TOKEN": token("kimi")}


def holds_token_on_purpose(path: Path) -> bool:
    return "token" in path.name.lower() or path.suffix in (".secret", ".key")


def leaks_in_files(roots: Iterable[Path], prefix: str = PREFIX) -> list[str]:
    """Files under ``roots`` whose bytes contain ``prefix`` (token files excepted)."""
    needle = prefix.encode()
    hits: list[str] = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                if holds_token_on_purpose(path) or path.is_symlink() or not path.is_file():
                    continue
                try:
                    if needle in path.read_bytes():
                        hits.append(str(path))
                except OSError:
                    continue
    return hits


def leaks_in_journal(since: float, prefix: str = PREFIX) -> list[str]:
    """Journal entries since ``since`` (unix time) with ``prefix`` in any field."""
    try:
        p = subprocess.run(
            ["journalctl", "--no-pager", "-o", "json", "--since", f"@{since:.0f}"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"journal not searched: {e}"]  # fails the run rather than passing unsearched
    if p.returncode != 0:
        return [f"journal not searched: journalctl exited {p.returncode}: {p.stderr[:200]!r}"]
    hits: list[str] = []
    for line in p.stdout.splitlines():
        if prefix.encode() not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {}
        who = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "?"
        hits.append(f"journal: {who}: {str(entry.get('MESSAGE', ''))[:200]}")
    return hits


def assert_no_token(text: str, where: str) -> None:
    if PREFIX in text:
        raise AssertionError(f"a secret token leaked into {where}: {text[:500]}")
