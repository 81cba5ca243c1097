"""razard's daemon loads a library only when the config uses it (issue 18's footprint).

httpx (and the rich, click and pygments its command line pulls in), pynvml, the
repair agents and the escalation notifier are megabytes a node that does not use
them should not carry. Each check runs in a fresh interpreter, so what an earlier
test imported cannot hide a regression.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap

import pytest

#: Loaded by nothing `import razard.daemon` runs on a node without http probes, AI
#: agents, escalation targets or a GPU.
NOT_AT_IMPORT = (
    "httpx",
    "rich",
    "click",
    "pygments",
    "pynvml",
    "psutil",
    "razard.repair.openai_agent",
    "razard.repair.opencode_agent",
    "razard.repair.registry",
    "razard.escalation.notifier",
    "razard.escalation.targets",
)


def loaded_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh Python; which of `NOT_AT_IMPORT` were imported then."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps({{m: m in sys.modules for m in {NOT_AT_IMPORT!r}}}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: dict[str, bool] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def test_importing_the_daemon_loads_no_optional_library() -> None:
    loaded = loaded_after("import razard.daemon")
    assert [m for m, yes in loaded.items() if yes] == []


def test_tcp_probes_do_not_load_httpx_and_http_probes_do() -> None:
    """A prober that ran only TCP probes never imported httpx; its first http probe does,
    and still answers (a refused connection is a failed probe, not an exception)."""
    loaded = loaded_after("""
        import asyncio, socket
        from razard.config import ProbeConfig
        from razard.probes import Prober

        async def main():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0)); s.listen()
                port = s.getsockname()[1]
                async with Prober() as p:
                    r = await p.run(ProbeConfig(kind="tcp", host="127.0.0.1", port=port))
                    assert r.ok, r
        asyncio.run(main())
    """)
    assert not loaded["httpx"]
    loaded = loaded_after("""
        import asyncio, socket
        from razard.config import ProbeConfig
        from razard.probes import Prober

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]   # bound, not listening: refused

        async def main():
            async with Prober() as p:
                url = f"http://127.0.0.1:{port}/health"
                r = await p.run(ProbeConfig(kind="http", url=url, timeout=5))
                assert not r.ok and r.detail, r
        asyncio.run(main())
    """)
    assert loaded["httpx"]


def test_no_agents_file_loads_no_repair_agent(tmp_path: object) -> None:
    """`load_repair` and `build_roster` on a config without an agents file or a registry
    (the daemon's start) import none of the agents' modules."""
    loaded = loaded_after(f"""
        import os, pathlib
        from razard.config import load_config
        from razard.repair.setup import build_roster, load_repair

        d = pathlib.Path({str(tmp_path)!r})
        (d / "razard.toml").write_text('[razard]\\nstate_dir = "{tmp_path}/state"\\n')
        cfg = load_config(d / "razard.toml")
        assert build_roster(load_repair(cfg, os.environ), os.environ) == []
    """)
    assert [m for m, yes in loaded.items() if yes] == []


def _has_nvml() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_has_nvml(), reason="this node has NVIDIA's library")
def test_no_nvidia_library_means_no_pynvml() -> None:
    """Without the driver's library the backend is unavailable, with the reason pynvml
    would give, and pynvml was never imported."""
    loaded = loaded_after("""
        from agents.gpu import GpuUnavailable, open_backend
        try:
            open_backend({})
        except GpuUnavailable as e:
            assert str(e) == "NVML library not found (no NVIDIA driver)", str(e)
        else:
            raise AssertionError("a backend without NVIDIA's library")
    """)
    assert not loaded["pynvml"]


def test_razarctl_loads_no_syntax_highlighter_or_config_parser() -> None:
    """`razarctl status` needs the control client, not pygments (only a diff on a
    terminal) nor the config parser (only commands given --config)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, razard.ctl; "
            "print(' '.join(m for m in ('pygments', 'rich.syntax', 'razard.config', 'tomllib', "
            "'httpx') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == []


def test_piped_razarctl_status_loads_only_its_own_command() -> None:
    """`razarctl status` into a pipe (scripts, monitoring) runs without rich, the journal
    reader, the patch engine or etcd's client: each command loads its own module, and a
    piped table is laid out without rich. Its error line is printed the same way. It
    reaches razard through the blocking client: no asyncio (nor ssl), no dbus-fast bus."""
    code = textwrap.dedent("""
        import sys
        from razard.ctl import main
        try:
            main(["--bus", "user", "--address", "unix:path=/nonexistent/bus", "status"])
        except SystemExit as exit:
            print(exit.code)
        print(" ".join(m for m in (
            "rich", "razard.triage", "razard.ctl.repairs", "razard.ctl.incidents",
            "razard.fleet.ctl", "razard.repair.patch", "httpx", "agents.monitoring",
            "asyncio", "ssl", "dbus_fast.aio", "dbus_fast.message_bus", "razard.control",
        ) if m in sys.modules))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["1"], out.stdout
    assert out.stderr.startswith("razarctl: cannot connect to the user bus"), out.stderr


def test_razarctl_help_loads_no_command() -> None:
    """`razarctl --help` lists every command without importing one (nor rich, the config
    parser, etcd's client or the monitoring check)."""
    code = textwrap.dedent("""
        import sys
        from razard.ctl import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print(" ".join(m for m in (
            "rich", "razard.config", "razard.ctl.components", "razard.ctl.repairs",
            "razard.ctl.incidents", "razard.fleet.ctl", "agents.monitoring", "httpx",
        ) if m in sys.modules), file=sys.stderr)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "verify-monitoring" in out.stdout and "status" in out.stdout
    assert out.stderr.split() == []
