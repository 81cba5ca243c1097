"""The opencode rung end to end: razard runs the REAL opencode CLI to heal a broken unit.

razard supervises a component on the test's private systemd user manager; the component
fails on a bad ``app.conf``, its restart fails too, and the repair ladder reaches the roster's
opencode agent. razard (not the test) finds ``opencode`` on its PATH, writes the scratch
copy's ``opencode.json`` pointing at the roster's endpoint (a streaming Chat Completions
server on 127.0.0.1 run by this test), and opencode's ``edit`` tool call on ``app.conf``
comes back as a diff that razard applies, verifies on the real unit and keeps.

Skipped with a reason, never faked, where the opencode CLI is not installed
(``scripts/install_opencode.sh`` installs it into ``.tools/opencode``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from razard.usermanager import UserManager
from tests.integration.harness import Razard, py, script, wait_for
from tests.integration.test_opencode_agent import ModelServer
from tests.integration.test_repair import APP

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "opencode" / "bin"
NAME = "it-opencode"
UNIT = f"razar-{NAME}.service"
MODEL = "razar-fake"
RATIONALE = "Set mode to ok: 'brokn' is not a mode this app knows."


def _opencode() -> str:
    """The real opencode CLI razard will find on its PATH, or skip: never a stand-in."""
    exe = TOOLS_BIN / "opencode"
    found = str(exe) if os.access(exe, os.X_OK) else shutil.which("opencode")
    if found is None:
        pytest.skip(
            f"the opencode CLI is not installed (not at {exe}, not on PATH): run "
            "scripts/install_opencode.sh (npm package opencode-ai into .tools/opencode)"
        )
    return found


class ThreadedModelServer:
    """`ModelServer` served from its own event loop thread, for a synchronous test."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ModelServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        done = asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop)
        done.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    d.mkdir()
    script(d / "app.py", APP)
    (d / "app.conf").write_text("# app settings\nmode = brokn\n")
    (d / "notes.txt").write_text("not an artifact\n")
    return d


@pytest.fixture
def run_razard(user_manager: UserManager, journald: object) -> Iterator[list[Razard]]:
    made: list[Razard] = []
    yield made
    for r in made:
        r.stop()
        r.cleanup_units([UNIT])


def _offline_env(home: Path) -> dict[str, str]:
    """What opencode needs to run offline with nothing of the machine's: PATH, HOME, XDG."""
    env = {
        "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        # no models.dev metadata, no npm installs of its plugin package, no self-update
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "npm_config_registry": "http://127.0.0.1:9/",
    }
    # razard.toml sets unit_dir, so XDG_CONFIG_HOME can be opencode's private one
    for var, sub in (
        ("HOME", ""),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    return env


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_razard_heals_with_the_real_opencode_cli(
    user_manager: UserManager, tmp_path: Path, app_dir: Path, run_razard: list[Razard]
) -> None:
    """razard's opencode rung: opencode edits app.conf, razard applies, verifies and keeps it."""
    _opencode()
    edit = {
        "name": "edit",
        "arguments": {"filePath": "app.conf", "oldString": "brokn", "newString": "ok"},
    }
    with ThreadedModelServer(ModelServer([edit], RATIONALE)) as server:
        (tmp_path / "razar_ai_agents.json").write_text(
            json.dumps(
                {
                    "active": "opencode",
                    "agents": [
                        {
                            "name": "opencode",
                            "kind": "opencode",
                            "endpoint": server.url,
                            "auth": "none",
                            "model": MODEL,
                            "timeout": 120,
                            "max_attempts": 1,
                        }
                    ],
                }
            )
        )
        r = Razard(
            user_manager,
            tmp_path,
            f"""
            [[component]]
            name = "{NAME}"
            layer = "throat"
            priority = 1
            command = ["{py()}", "{app_dir / "app.py"}"]
            working_directory = "{app_dir}"
            artifacts = ["app.conf"]
            restart = {{ attempts = 1, backoff_base = 0.05, backoff_cap = 0.1 }}
            """,
        )
        home, scratch = tmp_path / "opencode-home", tmp_path / "tmp"
        scratch.mkdir()
        r.extra_env = _offline_env(home) | {"TMPDIR": str(scratch)}
        run_razard.append(r)
        r.start(wait_ready=False)
        c = r.wait_state(NAME, "healthy", 90)
        requests = list(server.requests)

    # the component is healthy under razard, and only app.conf changed, exactly
    assert c["state"] == "healthy"
    assert user_manager.systemctl("is-active", UNIT, check=False).stdout.strip() == "active"
    assert (app_dir / "app.conf").read_text() == "# app settings\nmode = ok\n"
    assert (app_dir / "app.py").read_text() == APP
    assert (app_dir / "notes.txt").read_text() == "not an artifact\n"
    assert sorted(p.name for p in app_dir.iterdir()) == ["app.conf", "app.py", "notes.txt"]

    history = _jsonl(r.state_dir / "patch_history.jsonl")
    assert [h["status"] for h in history] == ["applied", "kept"]
    assert {h["agent"] for h in history} == {"opencode"}
    # razard writes the "healed" record after keeping the patch: a probe may be first
    log = r.state_dir / "razar_ai_invocations.json"
    invocations = wait_for(
        lambda: [i for i in _jsonl(log) if i["status"] == "healed"] and _jsonl(log),
        30,
        "the healed invocation record",
    )
    done = [i for i in invocations if i["status"] != "started"]
    assert [(i["status"], i["agent"]) for i in done] == [("healed", "opencode")]
    assert done[0]["rationale"] == RATIONALE  # opencode's final text, read from its events
    assert history[0]["files"] == ["app.conf"] and history[0]["rationale"] == RATIONALE
    assert "+mode = ok" in r.ctl("diff", NAME).stdout

    # it was the real opencode, run by razard, that asked the model, with the unit's journal
    agent_turns = [q for q in requests if q.get("tools")]
    assert agent_turns, f"opencode never asked the model for tools; requests: {requests}"
    assert {q["model"] for q in agent_turns} == {MODEL}
    assert "unknown mode 'brokn'" in json.dumps(agent_turns[0]["messages"])
    results = [m for m in agent_turns[-1]["messages"] if m.get("role") == "tool"]
    assert len(results) == 1  # opencode ran the edit and sent back its result
    # opencode ran with its own HOME inside the scratch copy, and the copy is gone
    assert not (home / ".local" / "share" / "opencode").exists()  # private HOME
    assert not list(scratch.glob("razar-opencode-*"))  # opencode's own temp files may stay
