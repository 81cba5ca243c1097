"""`razard check-config --host`: the config checked against a real temp tree on this node.

Users that exist (root, nobody) and one that does not, programs present, absent and
not executable, directories present and absent, a metrics port held by someone.
The systemd side (``unit =``) is in tests/integration/test_hostcheck_units.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from razard.cli import cli
from razard.config import load_config
from razard.hostcheck import Finding, bind_problem, check_host, resolve_program

RAZARD = Path(sys.executable).parent / "razard"
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "razard.toml"
MISSING_USER = "razar-no-such-user"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tree() -> Iterator[Path]:
    """bin/ok (executable), bin/noexec (mode 0644), bin/owner-only (0700), srv/ (a directory),
    afile; under /var/tmp, where other users (nobody) can reach it, unlike pytest's tmp_path."""
    base = Path(tempfile.mkdtemp(prefix="razar-hostcheck-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        (base / "bin").mkdir(mode=0o755)
        for name, mode in (("ok", 0o755), ("noexec", 0o644), ("owner-only", 0o700)):
            p = base / "bin" / name
            p.write_text("#!/bin/sh\nexit 0\n")
            p.chmod(mode)
        (base / "srv").mkdir()
        (base / "afile").write_text("not a directory\n")
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def write(tmp_path: Path, body: str, port: int | None = None) -> Path:
    cfg = tmp_path / "razard.toml"
    cfg.write_text(
        textwrap.dedent(f"""\
        [razard]
        state_dir = "{tmp_path / "state"}"
        bus = "user"
        unit_dir = "{tmp_path / "units"}"
        metrics_port = {_free_port() if port is None else port}
        """)
        + textwrap.dedent(body)
    )
    return cfg


def component(name: str, index_body: str) -> str:
    return f"""
[[component]]
name = "{name}"
layer = "crown"
priority = 1
{textwrap.dedent(index_body)}"""


def run_as_nobody(program: str) -> subprocess.CompletedProcess[bytes]:
    nobody = pwd.getpwnam("nobody")
    return subprocess.run(
        [program], user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/", check=False
    )


def by_key(findings: list[Finding]) -> dict[str, Finding]:
    return {f.key: f for f in findings}


def test_users_that_exist_pass_and_a_missing_one_is_an_error(tree: Path) -> None:
    cfg = write(
        tree,
        component("as-root", f'command = ["{tree}/bin/ok"]\nuser = "root"')
        + component("as-nobody", f'command = ["{tree}/bin/ok"]\nuser = "nobody"')
        + component("as-ghost", f'command = ["{tree}/bin/ok"]\nuser = "{MISSING_USER}"'),
    )
    found = by_key(check_host(load_config(cfg), units=False))
    assert list(found) == ["component[2] (as-ghost).user"], found
    f = found["component[2] (as-ghost).user"]
    assert f.error and f.file == str(cfg.resolve()) and MISSING_USER in f.reason


def test_programs_present_absent_and_not_executable(tree: Path) -> None:
    cfg = write(
        tree,
        component("present", f'command = ["{tree}/bin/ok", "--flag"]')
        + component("absent", f'command = ["{tree}/bin/gone"]')
        + component("noexec", f'command = ["{tree}/bin/noexec"]')
        + component("a-dir", f'command = ["{tree}/srv"]'),
    )
    found = by_key(check_host(load_config(cfg), units=False))
    assert set(found) == {
        "component[1] (absent).command",
        "component[2] (noexec).command",
        "component[3] (a-dir).command",
    }, found
    assert all(f.error for f in found.values())
    assert f"{tree}/bin/gone does not exist" in found["component[1] (absent).command"].reason
    assert "not executable" in found["component[2] (noexec).command"].reason
    assert "not a regular file" in found["component[3] (a-dir).command"].reason


@pytest.mark.skipif(os.geteuid() != 0, reason="a file owned by root, run as nobody")
def test_program_the_user_cannot_execute_is_an_error(tree: Path) -> None:
    """0700 root-owned: root may run it, nobody (what systemd's User= would run) may not."""
    cfg = write(
        tree,
        component("mine", f'command = ["{tree}/bin/owner-only"]\nuser = "root"')
        + component("theirs", f'command = ["{tree}/bin/owner-only"]\nuser = "nobody"'),
    )
    found = by_key(check_host(load_config(cfg), units=False))
    assert list(found) == ["component[1] (theirs).command"], found
    assert "not executable by user nobody" in found["component[1] (theirs).command"].reason
    # what the finding predicts is what the kernel does when it runs as nobody
    with pytest.raises(PermissionError):
        run_as_nobody(f"{tree}/bin/owner-only")
    ok = run_as_nobody(f"{tree}/bin/ok")
    assert ok.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a directory only root may enter")
def test_program_in_a_directory_the_user_cannot_enter_is_an_error(tree: Path) -> None:
    (tree / "private").mkdir(mode=0o700)
    (tree / "private" / "tool").write_text("#!/bin/sh\n")
    (tree / "private" / "tool").chmod(0o755)
    cfg = write(tree, component("hidden", f'command = ["{tree}/private/tool"]\nuser = "nobody"'))
    found = by_key(check_host(load_config(cfg), units=False))
    assert list(found) == ["component[0] (hidden).command"], found
    assert f"cannot enter {tree}/private" in found["component[0] (hidden).command"].reason


def test_exec_probe_programs_are_checked_on_this_node(tree: Path) -> None:
    """Exec probes name an absolute program (the config says so); the node must have it."""
    cfg = write(
        tree,
        component(
            "probe-abs",
            f'command = ["{tree}/bin/ok"]\n'
            f'probe = {{ type = "exec", command = ["{tree}/bin/nope"] }}',
        )
        + component(
            "probe-there",
            f'command = ["{tree}/bin/ok"]\n'
            f'probe = {{ type = "exec", command = ["{tree}/bin/ok"] }}',
        ),
    )
    found = by_key(check_host(load_config(cfg), {"PATH": "/usr/bin"}, units=False))
    assert set(found) == {"component[0] (probe-abs).probe.command"}, found


def test_resolve_program_like_exec() -> None:
    assert resolve_program("sh", "/nonexistent:/bin", "/") == (Path("/bin/sh"), None)
    assert resolve_program("/x/y", "", "/srv") == (Path("/x/y"), None)
    assert resolve_program("./y", "", "/srv") == (Path("/srv/y"), None)
    path, why = resolve_program("razar-no-such-tool", "/bin", "/")
    assert path is None and why is not None and "/bin" in why


def test_directories_present_and_absent(tree: Path) -> None:
    cfg = write(
        tree,
        component(
            "good",
            f'command = ["{tree}/bin/ok"]\nworking_directory = "{tree}/srv"\n'
            f'artifact_root = "{tree}"\nartifacts = ["x.conf"]',
        )
        + component(
            "no-wd",
            f'command = ["{tree}/bin/ok"]\nworking_directory = "{tree}/gone"\nartifacts = ["a"]',
        )
        + component(
            "no-root",
            f'command = ["{tree}/bin/ok"]\nartifact_root = "{tree}/gone2"\nartifacts = ["a"]',
        )
        + component(
            "file-root",
            f'command = ["{tree}/bin/ok"]\nartifact_root = "{tree}/afile"\nartifacts = ["a"]',
        ),
    )
    found = by_key(check_host(load_config(cfg), units=False))
    # an artifact_root that is the (missing) working_directory is reported once, there
    assert set(found) == {
        "component[1] (no-wd).working_directory",
        "component[2] (no-root).artifact_root",
        "component[3] (file-root).artifact_root",
    }, found
    assert all(f.error for f in found.values())
    assert "gone2 does not exist" in found["component[2] (no-root).artifact_root"].reason
    assert "not a directory" in found["component[3] (file-root).artifact_root"].reason


def test_foreign_unit_file_where_razard_would_write_is_an_error(tree: Path) -> None:
    (tree / "units").mkdir()
    (tree / "units" / "razar-taken.service").write_text("[Service]\nExecStart=/bin/true\n")
    cfg = write(tree, component("taken", f'command = ["{tree}/bin/ok"]'))
    found = by_key(check_host(load_config(cfg), units=False))
    assert list(found) == ["component[0] (taken)"], found
    assert "not written by razard" in found["component[0] (taken)"].reason


def test_token_file_and_healer_program(tree: Path) -> None:
    cfg = write(
        tree,
        f"""
        [chakra.crown]
        healer = ["{tree}/bin/missing-healer"]

        [escalation.webhook]
        url = "http://127.0.0.1:9/hook"
        token_file = "{tree}/no-token"
        """,
    )
    found = by_key(check_host(load_config(cfg), units=False))
    assert set(found) == {"chakra.crown.healer", "escalation.webhook.token_file"}, found
    (tree / "no-token").write_text("s3cret\n")
    (tree / "bin" / "missing-healer").write_text("#!/bin/sh\n")
    (tree / "bin" / "missing-healer").chmod(0o755)
    assert check_host(load_config(cfg), units=False) == []


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else listens on, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_metrics_port_in_use_is_a_warning(tree: Path, held_port: int) -> None:
    cfg = write(tree, component("fine", f'command = ["{tree}/bin/ok"]'), port=held_port)
    found = check_host(load_config(cfg), units=False)
    assert [(f.key, f.severity) for f in found] == [("razard.metrics_port", "warning")]
    assert "in use" in found[0].reason and "running razard" in found[0].reason
    # as check-config prints it: exit 0, the warning on stderr, ok on the last line
    r = CliRunner().invoke(cli, ["check-config", "--host", str(cfg)])
    assert r.exit_code == 0, r.output
    assert f"warning: {cfg.resolve()}: razard.metrics_port: " in r.stderr
    assert r.stdout.splitlines()[-1] == f"{cfg}: ok on this node, 1 warning"


def test_metrics_address_not_on_this_node_is_an_error() -> None:
    problem = bind_problem("192.0.2.1", 9360)  # TEST-NET-1: never a local address
    assert problem is not None and problem[0] == "error", problem
    assert bind_problem("127.0.0.1", 0) is None


def test_cli_errors_and_warnings_summary_and_exit_codes(tree: Path, held_port: int) -> None:
    cfg = write(
        tree,
        component("ghost", f'command = ["{tree}/bin/gone"]\nuser = "{MISSING_USER}"'),
        port=held_port,
    )
    r = CliRunner().invoke(cli, ["check-config", "--host", str(cfg)])
    assert r.exit_code == 1, r.output
    lines = r.stderr.splitlines()
    src = cfg.resolve()
    assert f"{src}: component[0] (ghost).user: no user {MISSING_USER!r}" in r.stderr
    assert f"{src}: component[0] (ghost).command: {tree}/bin/gone does not exist" in r.stderr
    assert any(line.startswith(f"warning: {src}: razard.metrics_port:") for line in lines)
    assert lines[-1] == f"{cfg}: 2 errors, 1 warning on this node"
    # --no-host: the same file is statically valid
    r = CliRunner().invoke(cli, ["check-config", "--no-host", str(cfg)])
    assert r.exit_code == 0 and r.stderr == "", r.output
    assert r.stdout.splitlines()[-1].startswith(f"{cfg}: ok (this node not checked")


def test_a_file_valid_on_this_node_is_ok(tree: Path) -> None:
    cfg = write(
        tree,
        component("fine", f'command = ["{tree}/bin/ok"]\nuser = "nobody"\nworking_directory = "/"'),
    )
    r = CliRunner().invoke(cli, ["check-config", "--host", str(cfg)])
    assert r.exit_code == 0 and r.stderr == "", r.output
    assert r.stdout.splitlines()[-1] == f"{cfg}: ok on this node"


def run_razard(*args: str) -> subprocess.CompletedProcess[str]:
    # no session bus: bus = "user" configs cannot reach a manager from here
    env = {"PATH": "/usr/bin:/bin", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"}
    return subprocess.run(
        [str(RAZARD), *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_shipped_example_is_not_ok_on_this_node_but_statically_valid() -> None:
    """The unedited example names users, programs and directories this node does not have."""
    if Path("/opt/inference/bin/serve").exists():
        pytest.skip("this node has the example's inference server")
    host = run_razard("check-config", "--host", str(EXAMPLE))
    assert host.returncode == 1, host.stdout + host.stderr
    assert "Traceback" not in host.stderr
    src = EXAMPLE.resolve()
    assert f"{src}: component[1] (inference).command: /opt/inference/bin/serve" in host.stderr
    assert "errors" in host.stderr.splitlines()[-1] and "on this node" in host.stderr
    static = run_razard("check-config", "--no-host", str(EXAMPLE))
    assert static.returncode == 0, static.stdout + static.stderr
    assert static.stderr == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="the default is --host only as root")
def test_host_check_is_the_default_as_root() -> None:
    if Path("/opt/inference/bin/serve").exists():
        pytest.skip("this node has the example's inference server")
    p = run_razard("check-config", str(EXAMPLE))
    assert p.returncode == 1 and "(inference).command" in p.stderr, p.stdout + p.stderr


def test_unreachable_manager_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    """bus = "user" with no session bus: the units cannot be asked about; say so, exit 0."""
    cfg = write(tmp_path, component("gpu", 'unit = "nvidia-persistenced.service"'))
    p = run_razard("check-config", "--host", str(cfg))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith(f"warning: {cfg.resolve()}: razard.bus: cannot ask the user manager")
    assert "not checked: nvidia-persistenced.service" in line
    assert p.stdout.splitlines()[-1] == f"{cfg}: ok on this node, 1 warning"


def test_metrics_port_from_the_environment_is_named_as_such(tree: Path, held_port: int) -> None:
    cfg = write(tree, component("fine", f'command = ["{tree}/bin/ok"]'))
    env = {"RAZAR_METRICS_PORT": str(held_port), "PATH": "/usr/bin"}
    found = check_host(load_config(cfg, env), env, units=False)
    assert [(f.key, f.severity) for f in found] == [("$RAZAR_METRICS_PORT", "warning")]
