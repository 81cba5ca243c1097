"""The embedded demo: the whole product on a private systemd user manager, in under a minute.

Nothing of the host's own services is touched: a private ``systemd --user`` is
started under a temporary directory, razard runs there as a ``Type=notify``
service (so ``systemctl --user start razard`` returns once razard is READY), and
four example components (``razard/demo_data/``) boot in three waves:

- wave 1: ``api`` (throat, HTTP probe) and ``inference`` (third_eye, heartbeat);
- wave 2: ``gateway`` (throat), shipped with a typo the error registry knows;
- wave 3: ``broken-indexer`` (crown), which dies at once, every time.

Then it shows, each under its own heading with the operator command that shows it:
(a) ``api`` SIGKILLed and healed by a restart; (b) ``gateway``'s known bug fixed by
the registry's patch, then ``razarctl rollback``; (c) ``inference`` hanging, its
layer going down, the third_eye healer restarting it and the layer coming back;
(d) ``broken-indexer``'s crash loop quarantined; (e) where to look: status,
incident, metrics. Every claim is checked from the outside, as an operator would:
systemd's own view of the units (``MainPID``, ``ActiveState``), the files on disk,
razarctl, the metrics page, the HTTP port. Exit 0 when every check passed.

One module (~600 lines): a scripted walk-through whose scenes (`Demo`) share one private
manager and razard; it is run by ``razard demo`` only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, TypeVar

from razard.errors import RazarError
from razard.layout import QUARANTINE_DIR
from razard.repair.registry import DEFAULT_REGISTRY
from razard.usermanager import UserManager, ensure_journald, start_user_manager, stop_journald

#: The example components' files, copied into the demo's directory.
DATA_FILES = ("inference.py", "gateway.py", "app.conf", "indexer.py")
COMPONENTS = ("api", "inference", "gateway", "broken-indexer")
#: The metric families shown in (e).
SHOWN_METRICS = (
    "razar_component_restarts_total",
    "razar_component_quarantined",
    "razar_patches_total",
    "razar_heal_attempts_total",
    "razar_chakra_outages_total",
)
T = TypeVar("T")
#: HTTP to 127.0.0.1 only: no proxy from the environment in the way
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def razarctl() -> str:
    """The razarctl installed beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "razarctl"
    return str(beside) if beside.exists() else (shutil.which("razarctl") or "razarctl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _data(name: str) -> str:
    return resources.files("razard").joinpath("demo_data", name).read_text(encoding="utf-8")


@dataclass
class Layout:
    """Where the demo's files are and which ports it uses."""

    base: Path
    api_port: int = field(default_factory=_free_port)
    metrics_port: int = field(default_factory=_free_port)

    @property
    def data(self) -> Path:
        return self.base / "demo"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def config(self) -> Path:
        return self.base / "razard.toml"

    @property
    def hang_file(self) -> Path:
        return self.base / "inference.hang"


def write_demo(layout: Layout, um: UserManager) -> Path:
    """Write the components' files, razard.toml, the agents file and the registry; returns
    the config path."""
    layout.data.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        (layout.data / name).write_text(_data(name))
    cfg = Template(_data("razard.toml")).substitute(
        base=layout.base,
        data=layout.data,
        state=layout.state,
        unit_dir=um.unit_dir,
        python=sys.executable,
        api_port=layout.api_port,
        metrics_port=layout.metrics_port,
    )
    layout.config.write_text(cfg)
    # the registry agent only: no network, no remote model
    (layout.base / "razar_ai_agents.json").write_text(_data("razar_ai_agents.json"))
    # the shipped registry (a checkout's config/); its demo entry is in razard/demo_data too
    registry = DEFAULT_REGISTRY if DEFAULT_REGISTRY.exists() else None
    text = registry.read_text() if registry else _data("error_registry.toml")
    (layout.base / "error_registry.toml").write_text(text)
    return layout.config


def razard_unit(config: Path) -> str:
    """A razard.service for the private manager, shaped like the production unit."""
    return textwrap.dedent(f"""\
        [Unit]
        Description=razard demo (self-healing supervisor)

        [Service]
        Type=notify
        NotifyAccess=main
        ExecStart={shlex.quote(sys.executable)} -m razard --config {shlex.quote(str(config))}
        ExecReload=/bin/kill -HUP $MAINPID
        WatchdogSec=20s
        Restart=on-failure
        TimeoutStartSec=90s
        """)


def wait_until(pred: Callable[[], T | None], timeout: float, step: float = 0.2) -> T | None:
    """Poll ``pred`` (an outside observer: razarctl, systemctl, files) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(step)


class Demo:
    """One run of the demo: the private manager, razard, the scenarios and their checks."""

    def __init__(self, um: UserManager, layout: Layout, wait: float = 60.0) -> None:
        self.um = um
        self.wait = wait
        self.layout = layout
        self.failed: list[str] = []
        self.passed = 0
        self.since = time.time()

    # ------------------------------------------------------------ outside views

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """razarctl ARGS against the demo's razard (quietly; see `show`)."""
        return subprocess.run(
            [razarctl(), "--bus", "user", "--address", self.um.bus_address, *args],
            capture_output=True,
            text=True,
            env=self.um.env(),
            timeout=60,
            check=False,
        )

    def status(self) -> dict[str, dict[str, Any]]:
        """razarctl status --json, by component name ({} when razard does not answer)."""
        p = self.ctl("status", "--json")
        if p.returncode != 0:
            return {}
        return {c["name"]: c for c in json.loads(p.stdout)["components"]}

    def state(self, name: str) -> str:
        return str(self.status().get(name, {}).get("state", "?"))

    def unit(self, name: str) -> tuple[str, int]:
        """systemd's own view of a component's unit: (ActiveState, MainPID)."""
        p = self.um.systemctl(
            "show", "-p", "ActiveState", "-p", "MainPID", f"razar-{name}.service", check=False
        )
        props = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
        return props.get("ActiveState", "?"), int(props.get("MainPID") or 0)

    def new_pid(self, name: str, old: int) -> int | None:
        """The unit's MainPID once it is active with a process other than ``old``."""
        state, pid = self.unit(name)
        return pid if state == "active" and pid not in (0, old) else None

    def layer(self, name: str) -> dict[str, Any]:
        """razarctl chakra --json: one layer's row."""
        p = self.ctl("chakra", "--json")
        if p.returncode != 0:
            return {}
        rows: list[dict[str, Any]] = json.loads(p.stdout)
        return next((r for r in rows if r.get("layer") == name), {})

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.layout.metrics_port}/metrics"
        with LOOPBACK.open(url, timeout=5) as r:
            return str(r.read().decode())

    def api_answers(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.layout.api_port}/"
            with LOOPBACK.open(url, timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False

    # ------------------------------------------------------------ output

    @staticmethod
    def heading(text: str) -> None:
        print(f"\n=== {text}", flush=True)

    @staticmethod
    def say(text: str) -> None:
        print(textwrap.indent(textwrap.dedent(text).strip("\n"), "    "), flush=True)

    def show(self, shown: str, argv: Sequence[str], lines: int | None = None) -> str:
        """Print ``$ shown`` and the output of ``argv`` (the last ``lines`` lines)."""
        print(f"$ {shown}", flush=True)
        # razarctl's tables are as wide as its output: not a terminal here, so say how
        # wide (at least 160, so that a long last error is not folded into a column)
        width = max(shutil.get_terminal_size((160, 24)).columns, 160)
        env = {**self.um.env(), "COLUMNS": str(width)}
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
        out = (p.stdout + p.stderr).rstrip("\n")
        kept = out.splitlines()[-lines:] if lines else out.splitlines()
        print(textwrap.indent("\n".join(kept), "  "), flush=True)
        return out

    def show_ctl(self, *args: str, lines: int | None = None) -> str:
        argv = [razarctl(), "--bus", "user", "--address", self.um.bus_address, *args]
        return self.show("razarctl " + shlex.join(args), argv, lines)

    def check(self, claim: str, ok: bool, seen: object = "") -> bool:
        """Record and print one claim checked from the outside."""
        if ok:
            self.passed += 1
            print(f"  [ok] {claim}", flush=True)
        else:
            self.failed.append(claim)
            print(f"  [FAILED] {claim}" + (f" (saw: {seen})" if seen != "" else ""), flush=True)
        return ok

    # ------------------------------------------------------------ the scenarios

    def boot(self) -> bool:
        self.heading("razard boots four components in three waves")
        self.say("""
            wave 1: api (throat, HTTP probe), inference (third_eye, heartbeat)
            wave 2: gateway (throat), shipped with a typo the error registry knows
            wave 3: broken-indexer (crown), which dies at once, every time
            """)
        print("$ systemctl --user start razard   (Type=notify: returns once razard is READY)")
        t0 = time.monotonic()
        started = self.um.systemctl("start", "razard.service", timeout=120, check=False)
        if not self.check(
            f"razard READY after {time.monotonic() - t0:.1f}s",
            started.returncode == 0,
            started.stderr.strip(),
        ):
            self._razard_journal()
            return False
        done = wait_until(
            lambda: (
                (s := self.status())
                and all(s.get(n, {}).get("state") in ("healthy", "quarantined") for n in COMPONENTS)
                and s
            ),
            self.wait,
        )
        self.check("razarctl: every wave settled (healthy or quarantined)", bool(done), done)
        units = {n: self.unit(n)[0] for n in COMPONENTS}
        self.check(
            "systemd: api, inference, gateway active; broken-indexer not",
            [units[n] == "active" for n in COMPONENTS] == [True, True, True, False],
            units,
        )
        self.show_ctl("status")
        return bool(done)

    def crash(self) -> None:
        self.heading("(a) a crash, healed by a restart")
        state, pid = self.unit("api")
        self.say(f"api is {state} as pid {pid}; kill it as a crash would:")
        print("$ systemctl --user kill -s SIGKILL razar-api.service")
        self.um.systemctl("kill", "-s", "SIGKILL", "razar-api.service", check=False)
        back = wait_until(lambda: self.new_pid("api", pid), 20)
        self.check(f"systemd: razar-api.service active again, new pid {back}", bool(back))
        healthy = wait_until(lambda: self.state("api") == "healthy" and self.api_answers(), 20)
        self.check(
            f"the API answers on 127.0.0.1:{self.layout.api_port} and razarctl says healthy",
            bool(healthy),
        )
        restarts = self.status().get("api", {}).get("restarts")
        self.check("razarctl status counts the restart", (restarts or 0) >= 1, restarts)
        self.show_ctl(
            "logs",
            "api",
            "--event",
            "component_failed",
            "--event",
            "state_restarting",
            "--since",
            f"@{self.since:.0f}",
            "-o",
            "cat",
        )

    def registry_fix(self) -> None:
        self.heading("(b) a known bug, fixed by the error registry, then rolled back")
        conf = self.layout.data / "app.conf"
        shipped = _data("app.conf")
        self.say("""
            gateway died at boot with "error: unknown mode 'brokn'". Its restart and
            the throat layer's healer did not help; then the `registry` repair agent
            matched that signature in error_registry.toml (entry demo-unknown-mode),
            patched app.conf (one of gateway's declared artifacts), restarted it and
            verified it healthy:
            """)
        self.show_ctl(
            "logs",
            "gateway",
            "--event",
            "escalation_result",
            "--event",
            "repair_healed",
            "--since",
            f"@{self.since:.0f}",
            "-o",
            "cat",
        )
        self.show_ctl("patches", "gateway")
        self.show_ctl("diff", "gateway")
        state, pid = self.unit("gateway")
        self.check(
            "app.conf on disk now says mode = ok", "mode = ok" in conf.read_text(), conf.read_text()
        )
        self.check(
            f"systemd: razar-gateway.service {state} (pid {pid}); razarctl: healthy",
            state == "active" and pid > 0 and self.state("gateway") == "healthy",
            (state, self.state("gateway")),
        )
        self.say("An operator who wants the shipped file back:")
        out = self.show_ctl("rollback", "gateway")
        self.check(
            "app.conf has its shipped bytes again", conf.read_text() == shipped, conf.read_text()
        )
        listed = json.loads(self.ctl("patches", "gateway", "--json").stdout or "[]")
        self.check(
            "razarctl patches records the rollback (reverted)",
            any(p.get("status") == "reverted" for p in listed),
            [p.get("status") for p in listed],
        )
        self.check("razard restarted gateway on the shipped app.conf", "restarted" in out, out)
        self.say("""
            gateway now fails as it did at boot, and razard does not re-apply a fix
            the registry already tried: gateway is quarantined (below).
            """)

    def layer_down(self) -> None:
        self.heading("(c) a layer goes down and its healer brings it back")
        row = self.layer("third_eye")
        state, pid = self.unit("inference")
        self.check(
            "razarctl chakra: third_eye up, inference beating", row.get("state") == "up", row
        )
        self.say("inference hangs (it keeps running, its heartbeat stops):")
        print(f"$ touch {self.layout.hang_file}")
        self.layout.hang_file.touch()
        down = wait_until(lambda: self.layer("third_eye").get("state") == "down", 15, 0.1)
        self.check("razarctl chakra: third_eye down", bool(down), self.layer("third_eye"))
        back = wait_until(
            lambda: self.layer("third_eye").get("state") == "up" and self.new_pid("inference", pid),
            40,
        )
        self.check(
            f"third_eye up again; systemd: inference restarted (pid {pid} -> {back or '?'})",
            bool(back),
            (self.layer("third_eye").get("state"), self.unit("inference")),
        )
        # the healer's result is written once razard has verified the heal (a settle time
        # after the layer is back): wait for it, as an operator would re-run the query
        wait_until(
            lambda: (
                "third_eye_inference_flush"
                in self.ctl(
                    "logs",
                    "--layer",
                    "third_eye",
                    "--event",
                    "heal_result",
                    "--since",
                    f"@{self.since:.0f}",
                    "-o",
                    "cat",
                ).stdout
            ),
            30,
        )
        journal = self.show_ctl(
            "logs",
            "--layer",
            "third_eye",
            "--event",
            "chakra_down",
            "--event",
            "heal_result",
            "--event",
            "chakra_up",
            "--since",
            f"@{self.since:.0f}",
            "-o",
            "cat",
        )
        self.check(
            "the journal has chakra_down, the healer's result and chakra_up",
            journal.count("\n") >= 2 and "third_eye_inference_flush" in journal,
            journal,
        )
        out = self.show_ctl(
            "logs", "inference", "--since", f"@{self.since:.0f}", "-o", "cat", lines=8
        )
        self.check(
            "inference's own output: it got the healer's flush signal (SIGUSR1)",
            "flushing the request queue" in out,
        )
        self.show_ctl("chakra")

    def crash_loop(self) -> None:
        self.heading("(d) a crash loop, quarantined")
        qfile = self.layout.state / QUARANTINE_DIR / "broken-indexer.json"
        state, pid = self.unit("broken-indexer")
        self.check(
            f"systemd: razar-broken-indexer.service {state}, not running",
            state != "active" and pid == 0,
            (state, pid),
        )
        self.check(f"quarantine record {qfile.name} written", qfile.exists())
        gateway = wait_until(
            lambda: (
                (u := self.unit("gateway"))[0] != "active"
                and (self.layout.state / QUARANTINE_DIR / "gateway.json").exists()
                and u
            ),
            30,
        )
        self.check(
            "gateway, back on its bug since the rollback, is quarantined too (unit stopped, "
            "record written)",
            bool(gateway),
            self.unit("gateway"),
        )
        self.show_ctl("quarantine", "list")
        self.say("It stays down until: razarctl quarantine release broken-indexer")

    def where_to_look(self) -> None:
        self.heading("(e) where to look")
        # inference's own ladder ends a little after its layer is back (the healer rung's
        # verdict waits out its settle time): show the table once it has, as an operator
        # would run it again
        wait_until(self._states_ok, 30, 0.2)
        out = self.show_ctl("status")
        self.check(
            "razarctl status: api, inference healthy; gateway, broken-indexer quarantined",
            self._states_ok(),
            {n: c.get("state") for n, c in self.status().items()},
        )
        self.say("Everything that happened to gateway, oldest first (needs no running razard):")
        out = self.show_ctl(
            "incident",
            "gateway",
            "--since",
            f"@{self.since:.0f}",
            "--config",
            str(self.layout.config),
        )
        self.check(
            "razarctl incident gateway: the registry's patch, the rollback, the quarantine",
            all(word in out for word in ("repair_healed", "patch_reverted", "state_quarantined")),
        )
        url = f"http://127.0.0.1:{self.layout.metrics_port}/metrics"
        print(f"$ curl -s {url} | grep -E '^({'|'.join(SHOWN_METRICS)})' | grep -v ' 0.0$'")
        page = self.metrics()
        shown = [
            ln
            for ln in page.splitlines()
            if ln.startswith(SHOWN_METRICS) and not ln.endswith(" 0.0")
        ]
        print(textwrap.indent("\n".join(shown), "  "))
        self.check(
            "metrics: api's restart and broken-indexer's quarantine are counted",
            _sample(page, "razar_component_restarts_total", 'component="api"') >= 1
            and _sample(page, "razar_component_quarantined", 'component="broken-indexer"') == 1,
        )

    def _states_ok(self) -> bool:
        s = self.status()
        return bool(
            s
            and s["api"]["state"] == "healthy"
            and s["inference"]["state"] == "healthy"
            and s["gateway"]["state"] == "quarantined"
            and s["broken-indexer"]["state"] == "quarantined"
        )

    def _razard_journal(self) -> None:
        p = self.um.systemctl("show", "-p", "ExecMainPID", "--value", "razard.service")
        journal = subprocess.run(
            ["journalctl", "--no-pager", "-o", "cat", "-n", "30", f"_PID={p.stdout.strip()}"],
            capture_output=True,
            text=True,
            check=False,
        )
        print("==> razard's output:")
        print(textwrap.indent(journal.stdout or "(no journal)", "    "))


def _sample(page: str, name: str, label: str) -> float:
    """The value of the first sample of ``name`` whose labels contain ``label`` (else -1)."""
    for line in page.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def run_demo(keep: bool = False, wait: float = 60.0) -> int:
    """Run the demo; returns 0 when every check passed."""
    if os.geteuid() != 0:
        raise RazarError(
            "the demo starts a private systemd user manager and needs root "
            "(it creates /run/systemd/system, as systemd requires)"
        )
    t0 = time.monotonic()
    layout = Layout(Path(tempfile.mkdtemp(prefix="razar-demo-")))
    journald = ensure_journald()
    try:
        um = start_user_manager(layout.base / "systemd", keep=keep)
    except RazarError:
        stop_journald(journald)
        raise
    demo = Demo(um, layout, wait)
    try:
        config = write_demo(layout, um)
        (um.unit_dir / "razard.service").write_text(razard_unit(config))
        um.systemctl("daemon-reload")
        print(f"==> private systemd user manager (pid {um.pid}) under {layout.base}")
        print(
            "    below, `systemctl --user` and `razarctl` (= razarctl --bus user) talk to it:\n"
            f"    XDG_RUNTIME_DIR={um.runtime_dir} "
            f"DBUS_SESSION_BUS_ADDRESS={um.bus_address}"
        )
        if demo.boot():
            demo.crash()
            demo.registry_fix()
            demo.layer_down()
            demo.crash_loop()
            demo.where_to_look()
        elapsed = time.monotonic() - t0
        if demo.failed:
            print(f"\n==> UNEXPECTED: {len(demo.failed)} check(s) failed:")
            for claim in demo.failed:
                print(f"    - {claim}")
        else:
            print(
                f"\n==> OK: all {demo.passed} checks passed: a crash healed, a known bug fixed "
                "and rolled back, a layer healed, a crash loop quarantined"
            )
        print(f"==> demo took {elapsed:.1f}s")
        if keep:
            um.detach()
            env = um.env()
            print(
                textwrap.dedent(f"""
                Left running. To look around:
                  export XDG_RUNTIME_DIR={env["XDG_RUNTIME_DIR"]}
                  export DBUS_SESSION_BUS_ADDRESS={env["DBUS_SESSION_BUS_ADDRESS"]}
                  {razarctl()} --bus user status
                  {razarctl()} --bus user chakra
                  {razarctl()} --bus user incident api --config {layout.config}
                  {razarctl()} --bus user quarantine release broken-indexer
                  systemctl --user status razard
                  curl -s http://127.0.0.1:{layout.metrics_port}/metrics | grep ^razar_
                To stop everything:
                  kill {um.pid}   # the private systemd; its units go with it
                """)
            )
    finally:
        if not keep:
            um.systemctl("stop", "razard.service", check=False)
            um.stop()
            stop_journald(journald)
            print(f"==> torn down (files kept in {layout.base})")
    return 1 if demo.failed else 0
