"""The opencode repair rung: a scratch copy edited by opencode, read back with git diff.

Two kinds of test:

- the REAL opencode CLI (installed by ``scripts/install_opencode.sh`` into
  ``.tools/opencode``, or on PATH) pointed by a project-level ``opencode.json`` at a
  Chat Completions server on 127.0.0.1 that this test runs (streaming SSE, as
  opencode's ``@ai-sdk/openai-compatible`` provider asks for). The "model" answers
  with ``edit``/``write`` tool calls, then a final text. Skipped when opencode is not
  installed; never faked.
- a scripted ``opencode`` executable on PATH, for the agent's own logic (scratch copy,
  config, diff, filter, deadline, clean-up) on any machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from razard.repair.opencode_agent import NOT_INSTALLED, OpencodeAgent, inside
from razard.repair.types import AgentFailed, AgentSkipped, RepairContext

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INSTALLED = REPO / ".tools" / "opencode" / "bin" / "opencode"
ARTIFACTS = ("app.py", "app.conf", "conf.d/")
APP = "import sys\nmode = open('app.conf').read().split('=')[1].strip()\n"
BROKEN = "mode = brokn\n"


def _opencode() -> str | None:
    """The real opencode CLI: $RAZAR_OPENCODE, the project-local install, or PATH."""
    for candidate in (os.environ.get("RAZAR_OPENCODE", ""), str(INSTALLED)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("opencode")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A component's artifact root: app.py, app.conf, conf.d/, and a file not declared."""
    root = tmp_path / "component"
    (root / "conf.d").mkdir(parents=True)
    (root / "app.py").write_text(APP)
    (root / "app.conf").write_text(BROKEN)
    (root / "conf.d" / "base.conf").write_text("port = 8080\n")
    (root / "secret.txt").write_text("not an artifact\n")
    return root


@pytest.fixture
def scratch_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's directory for this test, so clean-up of the scratch copy can be checked."""
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return base


def _ctx() -> RepairContext:
    return RepairContext(
        component="app",
        unit="razar-app.service",
        layer="throat",
        error="error: unknown mode 'brokn'",
        exit_status=2,
        unit_result="exit-code",
        artifacts={"app.py": APP, "app.conf": BROKEN},
    )


def _diff_paths(diff: str) -> list[str]:
    return [line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git")]


def _apply(diff: str, root: Path, into: Path) -> None:
    """Apply ``diff`` with git to a copy of ``root`` at ``into``."""
    shutil.copytree(root, into)
    subprocess.run(["git", "apply", "-"], cwd=into, input=diff.encode(), check=True)


# --------------------------------------------------------------------------- the real CLI


@dataclass
class ModelServer:
    """A Chat Completions endpoint on 127.0.0.1 that streams scripted tool calls.

    Requests carrying tools (opencode's agent loop) get ``tool_turns[n]`` where ``n`` is
    the number of tool results already in the conversation, then ``final``; requests
    without tools (opencode's title generation) get a short text.
    """

    tool_turns: list[dict[str, Any]]
    final: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def __aenter__(self) -> ModelServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while line := (await reader.readline()).decode("latin-1").strip():
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if request_line[:1] != ["POST"] or not request_line[1].endswith("/chat/completions"):
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            request = json.loads(body)
            self.requests.append(request)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
            )
            for chunk in self._reply(request):
                writer.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            writer.write(b"data: [DONE]\n\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _reply(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-razar",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": request.get("model", "fake"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        done = sum(1 for m in request.get("messages", []) if m.get("role") == "tool")
        if request.get("tools") and done < len(self.tool_turns):
            call = self.tool_turns[done]
            tool_call = {
                "index": 0,
                "id": f"call_{done}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
            }
            return [
                chunk({"role": "assistant", "content": None, "tool_calls": [tool_call]}),
                chunk({}, "tool_calls"),
            ]
        text = self.final if request.get("tools") else "Repair app.conf"
        return [chunk({"role": "assistant", "content": text}), chunk({}, "stop")]


@pytest.fixture
def real_opencode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The real opencode CLI with a private HOME, offline: no models.dev, no npm, no update."""
    exe = _opencode()
    if exe is None:
        pytest.skip(
            "the opencode CLI is not installed: run scripts/install_opencode.sh "
            "(npm package opencode-ai into .tools/opencode)"
        )
    home = tmp_path / "home"
    for var, sub in (
        ("HOME", ""),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(home / sub))
    # opencode fetches model metadata from models.dev and installs its plugin package
    # with npm at start-up; both are optional, and a node may be offline
    monkeypatch.setenv("OPENCODE_DISABLE_MODELS_FETCH", "1")
    monkeypatch.setenv("OPENCODE_DISABLE_AUTOUPDATE", "1")
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    return exe


def _provider(url: str) -> dict[str, Any]:
    return {
        "provider": {
            "razar-test": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "razar test model",
                "options": {"baseURL": url, "apiKey": "not-a-secret"},
                "models": {"fake": {"name": "fake"}},
            }
        },
        "model": "razar-test/fake",
        "small_model": "razar-test/fake",
    }


async def test_real_opencode_edit_becomes_a_diff_of_that_file(
    real_opencode: str, root: Path, scratch_base: Path, tmp_path: Path
) -> None:
    """opencode's edit tool call on app.conf comes back as a diff of app.conf alone."""
    edit = {
        "name": "edit",
        "arguments": {"filePath": "app.conf", "oldString": "brokn", "newString": "ok"},
    }
    async with ModelServer([edit], "Set mode to ok: 'brokn' is not a mode.") as server:
        agent = OpencodeAgent(
            "opencode",
            root,
            ARTIFACTS,
            binary=real_opencode,
            model="razar-test/fake",
            deadline=120,
            config=_provider(server.url),
        )
        proposal = await agent.propose(_ctx())
    assert _diff_paths(proposal.diff) == ["app.conf"]
    assert "-mode = brokn" in proposal.diff and "+mode = ok" in proposal.diff
    assert proposal.rationale == "Set mode to ok: 'brokn' is not a mode."
    assert proposal.agent == "opencode" and '"type":"tool_use"' in proposal.raw
    assert (root / "app.conf").read_text() == BROKEN  # the real file is the patch engine's job
    _apply(proposal.diff, root, tmp_path / "applied")
    assert (tmp_path / "applied" / "app.conf").read_text() == "mode = ok\n"
    prompt = next(r for r in server.requests if r.get("tools"))["messages"][-1]
    assert "error: unknown mode 'brokn'" in json.dumps(prompt)
    assert _empty(scratch_base)  # the scratch copy is gone


async def test_real_opencode_edits_outside_the_artifacts_are_dropped(
    real_opencode: str, root: Path, scratch_base: Path, tmp_path: Path
) -> None:
    """A write to an undeclared file is dropped from the diff; one outside the copy is denied."""
    outside = tmp_path / "outside.txt"
    turns = [
        {"name": "write", "arguments": {"filePath": "app.conf", "content": "mode = ok\n"}},
        {"name": "write", "arguments": {"filePath": "secret.txt", "content": "pwned\n"}},
        {"name": "write", "arguments": {"filePath": str(outside), "content": "pwned\n"}},
    ]
    async with ModelServer(turns, "Fixed app.conf.") as server:
        agent = OpencodeAgent(
            "opencode",
            root,
            ARTIFACTS,
            binary=real_opencode,
            model="razar-test/fake",
            deadline=120,
            config=_provider(server.url),
        )
        proposal = await agent.propose(_ctx())
    assert _diff_paths(proposal.diff) == ["app.conf"]
    assert "secret.txt" not in proposal.diff
    assert "dropped edits outside the artifacts: secret.txt" in proposal.rationale
    assert not outside.exists()  # external_directory is denied in the scratch config
    results = [m for m in server.requests[-1]["messages"] if m.get("role") == "tool"]
    assert len(results) == 3 and "Wrote file" not in json.dumps(results[2])
    assert (root / "secret.txt").read_text() == "not an artifact\n"
    assert _empty(scratch_base)  # the scratch copy is gone


# --------------------------------------------------------------------------- scripted CLI

FAKE_OPENCODE = """\
#!{python}
# A scripted stand-in for `opencode run --format json MESSAGE`, driven by $FAKE_PLAN.
import json, os, pathlib, subprocess, sys, time
plan = json.loads(os.environ.get("FAKE_PLAN", "{{}}"))
record = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": sys.stdin.read(),
          "config": pathlib.Path("opencode.json").read_text()
          if pathlib.Path("opencode.json").exists() else None,
          "files": sorted(str(p) for p in pathlib.Path(".").rglob("*")
                          if ".git" not in p.parts)}}
pathlib.Path(os.environ["FAKE_RECORD"]).write_text(json.dumps(record))
def event(kind, **part):
    print(json.dumps({{"type": kind, "sessionID": "ses_fake", "part": dict(part, type=kind)}}))
event("step_start")
for path, content in plan.get("writes", {{}}).items():
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content)
    event("tool_use", tool="write", state={{"status": "completed", "input": {{"filePath": path}}}})
if plan.get("hang"):
    child = subprocess.Popen(["sleep", "300"])
    pathlib.Path(os.environ["FAKE_RECORD"] + ".child").write_text(str(child.pid))
    time.sleep(300)
if plan.get("error"):
    print(json.dumps({{"type": "error", "error": {{"name": "APIError",
                                                   "data": {{"message": plan["error"]}}}}}}))
    sys.exit(plan.get("exit", 1))
for text in plan.get("texts", []):
    event("text", text=text)
sys.exit(plan.get("exit", 0))
"""


@pytest.fixture
def fake_opencode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, Any]], Path]]:
    """Put a scripted ``opencode`` first on PATH; call with its plan, get the record path."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    exe = bin_dir / "opencode"
    exe.write_text(FAKE_OPENCODE.format(python=sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_RECORD", str(record))

    def plan(p: dict[str, Any]) -> Path:
        monkeypatch.setenv("FAKE_PLAN", json.dumps(p))
        return record

    yield plan


async def test_scripted_change_is_read_back_and_filtered(
    fake_opencode: Callable[[dict[str, Any]], Path], root: Path, scratch_base: Path, tmp_path: Path
) -> None:
    """Edits and new files inside the artifacts come back as a diff; others are named, dropped."""
    record = fake_opencode(
        {
            "writes": {
                "app.conf": "mode = ok\n",
                "conf.d/extra.conf": "workers = 2\n",
                "secret.txt": "pwned\n",
                "run.sh": "#!/bin/sh\n",
            },
            "texts": ["thinking...", "Fixed the mode in app.conf."],
        }
    )
    agent = OpencodeAgent("opencode", root, ARTIFACTS, model="prov/m", config={"model": "prov/m"})
    proposal = await agent.propose(_ctx())
    assert sorted(_diff_paths(proposal.diff)) == ["app.conf", "conf.d/extra.conf"]
    assert proposal.rationale.startswith("Fixed the mode in app.conf.")
    assert "dropped edits outside the artifacts: run.sh, secret.txt" in proposal.rationale
    _apply(proposal.diff, root, tmp_path / "applied")
    assert (tmp_path / "applied" / "conf.d" / "extra.conf").read_text() == "workers = 2\n"
    assert (tmp_path / "applied" / "secret.txt").read_text() == "not an artifact\n"
    seen = json.loads(record.read_text())
    assert seen["argv"][:5] == ["run", "--format", "json", "--model", "prov/m"]
    assert "error: unknown mode 'brokn'" in seen["argv"][5]
    assert sorted(seen["files"]) == [
        "app.conf",
        "app.py",
        "conf.d",
        "conf.d/base.conf",
        "opencode.json",
    ]
    config = json.loads(seen["config"])
    assert config["model"] == "prov/m"
    assert config["permission"]["bash"] == "deny" and config["autoupdate"] is False
    assert _empty(scratch_base)  # the scratch copy is gone


async def test_scripted_no_change_fails(
    fake_opencode: Callable[[dict[str, Any]], Path], root: Path, scratch_base: Path
) -> None:
    """opencode finishing without touching an artifact is a failed attempt, not a proposal."""
    fake_opencode({"writes": {"secret.txt": "x\n"}, "texts": ["nothing to do"]})
    agent = OpencodeAgent("opencode", root, ARTIFACTS)
    with pytest.raises(AgentFailed, match=r"^opencode made no change \(dropped .*secret.txt"):
        await agent.propose(_ctx())
    assert _empty(scratch_base)  # the scratch copy is gone


async def test_scripted_error_exit_fails_with_its_message(
    fake_opencode: Callable[[dict[str, Any]], Path], root: Path
) -> None:
    """A non-zero exit fails the attempt with opencode's own error event."""
    fake_opencode({"error": "Cannot connect to API", "exit": 1})
    agent = OpencodeAgent("opencode", root, ARTIFACTS)
    with pytest.raises(AgentFailed, match="status 1: APIError: Cannot connect to API"):
        await agent.propose(_ctx())


async def test_scripted_hang_is_killed_at_the_deadline(
    fake_opencode: Callable[[dict[str, Any]], Path], root: Path, scratch_base: Path
) -> None:
    """A hanging opencode and its children are killed at the deadline; the copy is removed."""
    record = fake_opencode({"writes": {"app.conf": "mode = ok\n"}, "hang": True})
    agent = OpencodeAgent("opencode", root, ARTIFACTS, deadline=1.5)
    started = time.monotonic()
    with pytest.raises(AgentFailed, match=r"did not finish within 1.5s and was killed"):
        await agent.propose(_ctx())
    assert time.monotonic() - started < 10
    child = _pid(Path(f"{record}.child"))
    await asyncio.sleep(0.2)
    assert not _alive(child)
    assert _empty(scratch_base)  # the scratch copy is gone


async def test_long_message_goes_through_stdin(
    fake_opencode: Callable[[dict[str, Any]], Path], root: Path
) -> None:
    """A message too long for one argv string is piped to opencode's stdin instead."""
    record = fake_opencode({"writes": {"app.conf": "mode = ok\n"}})
    ctx = RepairContext(
        component="app", unit="razar-app.service", layer="throat", error="x" * 200_000
    )
    await OpencodeAgent("opencode", root, ARTIFACTS).propose(ctx)
    seen = json.loads(record.read_text())
    assert len(seen["argv"][-1]) < 100 and "x" * 200_000 in seen["stdin"]


async def test_missing_binary_skips_the_rung(root: Path) -> None:
    """Without an opencode executable the rung is skipped with the install hint."""
    agent = OpencodeAgent("opencode", root, ARTIFACTS, binary="opencode-not-here-razar")
    with pytest.raises(AgentSkipped) as info:
        await agent.propose(_ctx())
    assert str(info.value) == NOT_INSTALLED


def test_inside_follows_files_and_directories() -> None:
    """A path is inside when it is a declared file or below a declared directory."""
    assert inside("app.conf", ARTIFACTS) and inside("conf.d/a/b.conf", ARTIFACTS)
    assert not inside("conf.d", ARTIFACTS) and not inside("app.conf.bak", ARTIFACTS)
    assert not inside("conf.dx/a", ARTIFACTS) and not inside("../app.conf", ("../app.conf",))


def _empty(directory: Path) -> bool:
    return not any(directory.iterdir())


def _pid(path: Path) -> int:
    return int(path.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited; only its parent (gone with the group) would reap it
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
