"""Throwaway local users for the tests that play other people on the node."""

from __future__ import annotations

import contextlib
import grp
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Users:
    outsider: str  # an ordinary user
    operator: str  # a member of group razar


@contextlib.contextmanager
def throwaway_users(prefix: str) -> Iterator[Users]:
    """Two system users, ``<prefix>out-*`` and ``<prefix>op-*`` (in group razar, made if
    the machine has none); removed again, with the group when it was made here."""
    tag = uuid.uuid4().hex[:6]
    made_group = False
    try:
        grp.getgrnam("razar")
    except KeyError:
        subprocess.run(["groupadd", "--system", "razar"], check=True)
        made_group = True
    outsider, operator = f"{prefix}out-{tag}", f"{prefix}op-{tag}"
    base = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    subprocess.run([*base, "--no-user-group", outsider], check=True)
    subprocess.run([*base, "--no-user-group", "--groups", "razar", operator], check=True)
    try:
        yield Users(outsider, operator)
    finally:
        for name in (outsider, operator):
            subprocess.run(["userdel", name], check=False)
        if made_group:
            subprocess.run(["groupdel", "razar"], check=False)
