"""razard on a real node: installed by the README's steps, run by systemd as PID 1.

One booted Debian 12 container for the module (see bed.py). The tests run in
order, as an operator's first hour would: install by hand, start, triage as
root, as an operator (group razar) and as an outsider, break things and watch
razard heal them, reload, restart, daemon-reload. Every check is made from
outside razard: systemctl, journalctl, the files, the metrics page.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from typing import Any

import pytest

from tests.system import bed
from tests.system.conftest import readme_block

pytestmark = pytest.mark.timeout(600)

APP = """\
import pathlib, sys, time
mode = pathlib.Path("app.conf").read_text().split("=")[1].strip()
if mode != "ok":
    print(f"error: unknown mode '{mode}'", file=sys.stderr, flush=True)
    sys.exit(2)
print("app: serving", flush=True)
time.sleep(100000)
"""

COMPONENTS = """\
[[component]]
name = "web"
layer = "throat"
priority = 10
command = ["/usr/bin/python3", "-m", "http.server", "8081", "--bind", "127.0.0.1"]
working_directory = "/srv/web"
user = "app"
probe = { type = "http", url = "http://127.0.0.1:8081/", interval = 1.0 }
restart = { attempts = 3, backoff_base = 0.2, backoff_cap = 2.0 }

[[component]]
name = "worker"
layer = "heart"
priority = 10
command = ["/bin/sleep", "infinity"]
user = "app"
restart = { attempts = 3, backoff_base = 0.2, backoff_cap = 2.0 }

[[component]]
name = "regfix"
layer = "third_eye"
priority = 20
command = ["/usr/bin/python3", "/srv/regfix/app.py"]
working_directory = "/srv/regfix"
user = "app"
artifacts = ["app.conf"]
restart = { attempts = 1, backoff_base = 0.1, backoff_cap = 0.2 }

[[component]]
name = "crashy"
layer = "crown"
priority = 30
command = ["/bin/sh", "-c", "echo 'crashy: cannot open model weights' >&2; exit 3"]
restart = { attempts = 2, backoff_base = 0.1, backoff_cap = 0.2 }
"""

EXTRA = """
[[component]]
name = "extra"
layer = "throat"
priority = 40
command = ["/bin/sleep", "infinity"]
user = "app"
"""

#: third_eye's healer here: reports, from inside its transient unit, what the sandbox let it
#: do, and says "not applicable" so the ladder goes on to the repair agents
INSPECT_HEALER = """\
#!/usr/bin/python3
import json, os, sys
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
def writable(path):
    try:
        with open(path, "w"):
            pass
        os.unlink(path)
        return True
    except OSError:
        return False
json.dump({
    "cap_eff": status["CapEff"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "uid": os.getuid(),
    "etc_writable": writable("/etc/razar-heal-probe"),
    "usr_writable": writable("/usr/razar-heal-probe"),
    "host_tmp_seen": os.path.exists("/tmp/razar-node-marker"),
    "unit": os.environ.get("RAZAR_UNIT", ""),
    "layer": os.environ.get("RAZAR_LAYER", ""),
    "reason": "inspection only",
}, sys.stdout)
sys.exit(2)
"""
HEALER = "/usr/local/libexec/razar-inspect-healer"

CONFIG = "/etc/razard/razard.toml"
RAZARCTL = "/usr/local/bin/razarctl"


def config(components: str) -> str:
    return (
        textwrap.dedent("""\
        [razard]
        state_dir = "/var/lib/razard"
        bus = "system"
        metrics_port = 9360

        [chakra.third_eye]
        healer = ["/usr/local/libexec/razar-inspect-healer"]
        """)
        + "\n"
        + components
    )


def ctl(node: bed.Node, *args: str, user: str | None = None, check: bool = True) -> bed.Result:
    return node.run([RAZARCTL, *args], user=user, check=check, timeout=60)


def status(node: bed.Node) -> dict[str, dict[str, Any]]:
    rows = json.loads(ctl(node, "status", "--json").stdout)["components"]
    return {r["name"]: r for r in rows}


def main_pid(node: bed.Node, unit: str) -> int:
    return int(node.show(unit, "MainPID")["MainPID"])


def metrics(node: bed.Node) -> str:
    py = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9360/metrics').read().decode())"
    return node.run(["/opt/razar/bin/python", "-c", py]).stdout


def metric(page: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", page, re.M)
    assert m, f"{name} not on the metrics page"
    return float(m.group(1))


@pytest.fixture(scope="module")
def installed(node: bed.Node) -> bed.Node:
    """razar installed by the README's block, word for word, from the checkout's copy."""
    script = readme_block("install-by-hand")
    # the node has no network: pip installs from wheels fetched on the host
    env = {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": bed.WHEELS_IN_NODE,
        "DEBIAN_FRONTEND": "noninteractive",
    }
    node.run(f"cd /root/razar && set -ex\n{script}", env=env, timeout=600)
    # the node's people: a component user, an operator in group razar, an outsider
    node.run(
        "useradd --system --no-create-home app && useradd -m -G razar op && useradd -m outsider"
    )
    node.run("install -d -m 755 /srv/web /srv/regfix")
    node.copy_in_text("/srv/regfix/app.py", APP)
    node.copy_in_text("/srv/regfix/app.conf", "# app settings\nmode = brokn\n")
    node.copy_in_text(CONFIG, config(COMPONENTS))
    node.copy_in_text(HEALER, INSPECT_HEALER, mode=0o755)
    node.run("touch /tmp/razar-node-marker")
    return node


def test_policy_loaded_without_unknown_group(installed: bed.Node) -> None:
    """The group exists before the policy lands, so dbus-daemon never rejects it."""
    assert "Unknown group" not in installed.journal("-u", "dbus.service")


def test_check_config_knows_the_node(installed: bed.Node) -> None:
    """The unedited example names users, programs and units this node has not got:
    check-config (as root: the node is checked too) says so; the node's own config passes."""
    example = installed.run(
        ["razard", "check-config", "/root/razar/config/razard.toml"], check=False
    )
    assert example.returncode == 1, example
    assert "inference" in example.stdout + example.stderr
    assert "nvidia-persistenced.service" in example.stdout + example.stderr
    out = installed.run(["razard", "check-config", CONFIG])
    assert "ok" in out.stdout.splitlines()[-1], out.stdout


def test_enable_now_returns_once_ready_with_a_true_status(installed: bed.Node) -> None:
    """`systemctl enable --now razard` waits for READY=1; the STATUS= it leaves counts
    units that systemd says are active."""
    script = readme_block("start-by-hand").replace("editor /etc/razard/razard.toml\n", "")
    t0 = time.monotonic()
    installed.run(f"set -ex\n{script}", timeout=150)
    took = time.monotonic() - t0
    props = installed.show("razard.service", "ActiveState", "SubState", "StatusText", "NRestarts")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    m = re.search(r"(\d+) healthy", props["StatusText"])
    assert m, props["StatusText"]
    active = [
        u
        for u in ("razar-web.service", "razar-worker.service")
        if installed.show(u, "ActiveState")["ActiveState"] == "active"
    ]
    assert int(m.group(1)) <= len(active) + 2  # later waves may have settled too
    assert installed.systemctl("is-enabled", "razard").stdout.strip() == "enabled"
    # the notifier's timer covers the time razard is down
    assert installed.systemctl("is-active", "razar-notifier.timer").stdout.strip() == "active"
    print(f"enable --now returned after {took:.1f}s; STATUS={props['StatusText']}")
    installed.wait_for("web healthy", lambda: status(installed)["web"]["state"] == "healthy")


def test_status_for_root_and_operators_refused_to_others(installed: bed.Node) -> None:
    as_root = ctl(installed, "status")
    assert "web" in as_root.stdout
    as_op = ctl(installed, "status", "--json", user="op")
    assert {r["name"] for r in json.loads(as_op.stdout)["components"]} >= {"web", "worker"}
    refused = ctl(installed, "status", user="outsider", check=False)
    assert refused.returncode == 1
    assert "web" not in refused.stdout
    assert re.search(r"denied|not allowed|permission", refused.stderr, re.I), refused.stderr
    # nor can an outsider call razard behind razarctl's back, or take its name
    call = installed.run(
        "dbus-send --system --print-reply --dest=org.razar.Supervisor1 "
        "/org/razar/Supervisor1 org.razar.Supervisor1.Status",
        user="outsider",
        check=False,
    )
    assert call.returncode != 0 and "AccessDenied" in call.stderr, call
    own = installed.run(
        [
            "/opt/razar/bin/python",
            "-c",
            "import asyncio\n"
            "from dbus_fast.aio import MessageBus\n"
            "from dbus_fast import BusType\n"
            "async def main():\n"
            "    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()\n"
            "    print(await bus.request_name('org.razar.Supervisor1'))\n"
            "asyncio.run(main())\n",
        ],
        user="outsider",
        check=False,
    )
    assert own.returncode != 0 and "not allowed to own" in own.stderr, own


def test_state_is_for_root_and_operators_only(installed: bed.Node) -> None:
    """/var/lib/razard is root:razar 0750: operators read what razard knows, others not."""
    st = installed.run(["stat", "-c", "%U:%G %a", "/var/lib/razard"]).stdout.split()
    assert st[0] == "root:razar" and int(st[1], 8) & 0o7777 in (0o750, 0o2750), st
    denied = installed.run(["cat", "/var/lib/razard/razar.log"], user="outsider", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    lock = installed.run(
        ["flock", "-n", "/var/lib/razard/razard.lock", "true"], user="outsider", check=False
    )
    assert lock.returncode != 0, lock
    as_op = installed.run(
        [RAZARCTL, "incident", "web", "--config", CONFIG, "--json"], user="op", check=False
    )
    assert as_op.returncode == 0, as_op
    as_outsider = installed.run(
        [RAZARCTL, "incident", "web", "--config", CONFIG], user="outsider", check=False
    )
    assert as_outsider.returncode != 0, as_outsider


def test_forged_journal_entries_are_not_razards(installed: bed.Node) -> None:
    """Anyone may write to the journal under razard's name; nothing razard's records
    feed (incident timeline, logs) takes it for razard's."""
    forged = (
        "SYSLOG_IDENTIFIER=razard\nRAZAR_COMPONENT=web\nRAZAR_EVENT=operator_alert\n"
        "MESSAGE=web quarantined: FORGED-BY-OUTSIDER\n"
    )
    installed.run(["logger", "--journald"], user="outsider", input=forged)
    installed.wait_for(
        "the forged line in the journal",
        lambda: "FORGED-BY-OUTSIDER" in installed.journal("SYSLOG_IDENTIFIER=razard"),
    )
    timeline = ctl(installed, "incident", "web", "--config", CONFIG, "--json").stdout
    assert "FORGED-BY-OUTSIDER" not in timeline
    logs = ctl(installed, "logs", "web", "-o", "cat").stdout
    assert "FORGED-BY-OUTSIDER" not in logs


def test_journal_attributes_output_and_events(installed: bed.Node) -> None:
    """The unit's own output under its unit; razard's records under RAZAR_COMPONENT."""
    installed.wait_for(
        "web's request log",
        lambda: "GET / HTTP" in installed.journal("-u", "razar-web.service"),
    )
    events = installed.journal("RAZAR_COMPONENT=web", "_SYSTEMD_UNIT=razard.service", "-o", "json")
    records = [json.loads(line) for line in events.splitlines()]
    assert "state_healthy" in {r.get("RAZAR_EVENT") for r in records}, records
    # the plain journal says which component each line is about
    assert all("web" in r["MESSAGE"] for r in records), [r["MESSAGE"] for r in records]
    # and the libraries' chatter stays out (an HTTP probe runs every second)
    plain = installed.journal("-u", "razard.service")
    assert "HTTP Request" not in plain and "httpx" not in plain, plain[-2000:]


def test_sigkilled_component_is_restarted(installed: bed.Node) -> None:
    before = main_pid(installed, "razar-worker.service")
    assert before > 0
    installed.run(["kill", "-KILL", str(before)])
    after = installed.wait_for(
        "a new worker",
        lambda: (p := main_pid(installed, "razar-worker.service")) not in (0, before) and p,
    )
    assert installed.show("razar-worker.service", "ActiveState")["ActiveState"] == "active"
    row = installed.wait_for(
        "worker healthy again",
        lambda: (r := status(installed)["worker"])["state"] == "healthy" and r,
    )
    assert row["restarts"] >= 1, row
    print(f"worker MainPID {before} -> {after}")


def test_crash_loop_is_quarantined(installed: bed.Node) -> None:
    installed.wait_for(
        "crashy quarantined",
        lambda: status(installed)["crashy"]["state"] == "quarantined",
        timeout=120,
    )
    record = json.loads(installed.run(["cat", "/var/lib/razard/quarantine/crashy.json"]).stdout)
    assert record
    assert installed.show("razar-crashy.service", "ActiveState")["ActiveState"] != "active"
    alerts = installed.journal("RAZAR_COMPONENT=crashy", "RAZAR_EVENT=operator_alert")
    assert "crashy" in alerts


def test_registry_fix_then_rollback(installed: bed.Node) -> None:
    """A known fault patched by the registry agent; `razarctl rollback` puts the bytes back."""
    installed.wait_for(
        "regfix healed by the registry",
        lambda: status(installed)["regfix"]["state"] == "healthy",
        timeout=120,
    )
    assert "mode = ok" in installed.run(["cat", "/srv/regfix/app.conf"]).stdout
    out = ctl(installed, "rollback", "regfix")
    assert out.returncode == 0
    assert "mode = brokn" in installed.run(["cat", "/srv/regfix/app.conf"]).stdout
    history = installed.run(["tail", "-n1", "/var/lib/razard/patch_history.jsonl"]).stdout
    assert json.loads(history)["status"] == "reverted"


def test_metrics_served_on_loopback(installed: bed.Node) -> None:
    page = metrics(installed)
    assert re.search(r'^razar_component_up\{component="web",layer="throat"\} 1\.0$', page, re.M)
    listeners = installed.run(["ss", "-Hltn", "sport = :9360"]).stdout
    local = [line.split()[3] for line in listeners.splitlines()]
    assert local == ["127.0.0.1:9360"], listeners


def test_healer_runs_in_its_own_hardened_unit(installed: bed.Node) -> None:
    """A layer healer runs as a transient unit of PID 1 with its layer's sandbox applied
    for real: seen from inside the healer itself."""
    out = ctl(installed, "chakra", "heal", "third_eye", "--json", check=False)
    assert out.returncode == 2, out  # the inspector says "not applicable"
    seen = json.loads(out.stdout)["report"]
    print(f"inside the healer unit: {seen}")
    assert seen["uid"] == 0 and seen["layer"] == "third_eye"
    assert int(seen["cap_eff"], 16) == 0  # third_eye keeps no capability
    assert seen["no_new_privs"] == "1"
    assert not seen["etc_writable"] and not seen["usr_writable"]  # ProtectSystem=strict
    assert not seen["host_tmp_seen"]  # PrivateTmp
    # PID 1 itself ran it: its records of the transient unit
    records = installed.journal("-o", "json", "_PID=1", "-u", "razar-heal-third-eye-*")
    units = {json.loads(line).get("UNIT", "") for line in records.splitlines()}
    assert any(u.startswith("razar-heal-third-eye-") for u in units), units


def test_reload_adds_a_component(installed: bed.Node) -> None:
    installed.copy_in_text(CONFIG, config(COMPONENTS + EXTRA))
    installed.systemctl("reload", "razard", timeout=90)
    installed.wait_for(
        "extra running",
        lambda: installed.show("razar-extra.service", "ActiveState")["ActiveState"] == "active",
    )
    installed.wait_for("extra in status", lambda: "extra" in status(installed))


def test_daemon_reload_is_noticed(installed: bed.Node) -> None:
    before = metric(metrics(installed), "razar_bus_resyncs_total")
    installed.systemctl("daemon-reload")
    installed.wait_for(
        "a resync after daemon-reload",
        lambda: metric(metrics(installed), "razar_bus_resyncs_total") > before,
    )
    # and the jobs razard waits for still finish afterwards
    pid = main_pid(installed, "razar-worker.service")
    installed.run(["kill", "-KILL", str(pid)])
    installed.wait_for(
        "worker restarted after daemon-reload",
        lambda: main_pid(installed, "razar-worker.service") not in (0, pid),
    )


def test_journald_rate_limit_does_not_drop_razards_events(installed: bed.Node) -> None:
    """journald drops a service's messages past its burst (10000 in 30 s by default): in a
    storm that would be razard's record of the incident and its notifier's input. The unit
    turns the limit off for razard. Here journald's burst is set to 2 (journald scales it
    up by free space: about 10 on a disk of 100 GB) and an operator restarts a component
    15 times, 40 events or more from razard in a few seconds: every one is in the journal,
    as in razar.log."""
    conf = "/etc/systemd/journald.conf.d/razar-test.conf"
    installed.copy_in_text(conf, "[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst=2\n")
    installed.systemctl("restart", "systemd-journald")
    try:
        since = float(installed.run("date +%s.%N").stdout)
        for _ in range(15):  # an operator's restarts: no restart budget spent
            pid = main_pid(installed, "razar-worker.service")
            ctl(installed, "restart", "worker")

            def back(old: int = pid) -> bool:
                new = main_pid(installed, "razar-worker.service")
                return new not in (0, old) and status(installed)["worker"]["state"] == "healthy"

            installed.wait_for("worker healthy again", back)
        log = installed.run("cat /var/lib/razard/razar.log").stdout.splitlines()
        logged = [
            e["event"]
            for e in map(json.loads, log)
            if e.get("component") == "worker" and e["unix"] >= since
        ]
        assert len(logged) >= 40, logged

        def journaled() -> list[str]:
            out = installed.journal(
                "-o",
                "json",
                f"--since=@{since:.6f}",
                "_SYSTEMD_UNIT=razard.service",
                "RAZAR_COMPONENT=worker",
            )
            return [json.loads(line)["RAZAR_EVENT"] for line in out.splitlines()]

        try:
            installed.wait_for(
                "every event in the journal", lambda: len(journaled()) >= len(logged)
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\nrazar.log: {logged}\njournal: {journaled()}") from None
        assert journaled() == logged
        assert "Suppressed" not in installed.journal(
            "-u", "systemd-journald", f"--since=@{since:.6f}"
        )
    finally:
        installed.run(["rm", "-f", conf])
        installed.systemctl("restart", "systemd-journald")


def test_daemon_reexec_is_survived(installed: bed.Node) -> None:
    """`systemctl daemon-reexec` (what every upgrade of systemd's package runs): PID 1
    re-executes itself, its name leaves the bus and comes back. The same razard still
    restarts a killed component afterwards, and says so in status."""
    razard_pid = main_pid(installed, "razard.service")
    restarts = status(installed)["worker"]["restarts"]
    installed.systemctl("daemon-reexec", timeout=90)
    pid = main_pid(installed, "razar-worker.service")
    installed.run(["kill", "-KILL", str(pid)])
    installed.wait_for(
        "worker restarted after daemon-reexec",
        lambda: main_pid(installed, "razar-worker.service") not in (0, pid),
    )
    row = installed.wait_for(
        "worker healthy again, its restart counted",
        lambda: (
            (r := status(installed)["worker"])["state"] == "healthy"
            and r["restarts"] > restarts
            and r
        ),
    )
    assert main_pid(installed, "razard.service") == razard_pid, row


def test_restart_of_razard_adopts_running_units(installed: bed.Node) -> None:
    units = ("razar-web.service", "razar-worker.service", "razar-extra.service")
    before = {u: main_pid(installed, u) for u in units}
    old = main_pid(installed, "razard.service")
    installed.systemctl("restart", "razard", timeout=150)
    assert main_pid(installed, "razard.service") != old
    assert {u: main_pid(installed, u) for u in units} == before
    rows = status(installed)
    assert rows["web"]["state"] == "healthy"
    assert rows["crashy"]["state"] == "quarantined"  # a quarantine survives a restart


def test_ready_after_a_cold_start_counts_live_units(installed: bed.Node) -> None:
    """As after a reboot: saved state says healthy, the units are down. READY's STATUS=
    counts only what systemd says is active by then."""
    installed.systemctl("stop", "razard", timeout=90)
    units = ["razar-web.service", "razar-worker.service", "razar-extra.service"]
    installed.systemctl("stop", *units, timeout=90)
    installed.systemctl("start", "razard", timeout=150)
    text = installed.show("razard.service", "StatusText")["StatusText"]
    m = re.search(r"(\d+) healthy", text)
    assert m, text
    active = [u for u in units if installed.show(u, "ActiveState")["ActiveState"] == "active"]
    assert int(m.group(1)) <= len(active), (text, active)
    installed.wait_for("web healthy again", lambda: status(installed)["web"]["state"] == "healthy")


def test_watchdog_never_fired(installed: bed.Node) -> None:
    journal = installed.journal("_PID=1", "-g", "razard.service")
    assert "Watchdog timeout" not in journal
    assert "StartUnit job did not finish" not in installed.journal("-u", "razard.service")
    assert installed.show("razard.service", "NRestarts")["NRestarts"] == "0"


#: the operator console for the journald test: appends each authorised POST to a file
CONSOLE = """\
import http.server, sys
port, out, token = int(sys.argv[1]), sys.argv[2], open(sys.argv[3]).read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = self.headers.get("Authorization") == f"Bearer {token}"
        if ok:
            with open(out, "ab") as f:
                f.write(body + b"\\n")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass  # its stderr goes to journald, which the test stops
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""

DOOMED = """
[[component]]
name = "doomed"
layer = "heart"
priority = 50
command = ["/bin/sh", "-c", "test -e /srv/doom && exit 3; exec sleep infinity"]
restart = { attempts = 2, backoff_base = 0.1, backoff_cap = 0.2 }

[escalation]
poll_interval = 0.5
retry_base = 0.2

[escalation.operator]
url = "http://127.0.0.1:9399"
token_file = "/etc/razard/operator.token"
"""

JOURNALD_UNITS = ("systemd-journald.socket", "systemd-journald-dev-log.socket")


def test_journald_stopped_razard_heals_on_and_the_operator_hears(installed: bed.Node) -> None:
    """journald stopped with its sockets (an upgrade, an operator's mistake): razard goes on
    (same process: its stderr to the journal is gone too), a crash loop is quarantined, and
    the quarantine reaches the operator's console once, from the events razard kept while
    journald refused them."""
    installed.copy_in_text("/srv/console.py", CONSOLE)
    installed.copy_in_text("/etc/razard/operator.token", "node-console-token\n", mode=0o600)
    installed.run(
        "systemd-run --unit=razar-test-console /usr/bin/python3 /srv/console.py 9399 "
        "/srv/console.jsonl /etc/razard/operator.token"
    )
    installed.copy_in_text(CONFIG, config(COMPONENTS + EXTRA + DOOMED))
    installed.systemctl("restart", "razard", timeout=150)  # [escalation] is read at start
    installed.wait_for("doomed healthy", lambda: status(installed)["doomed"]["state"] == "healthy")
    razard_pid = main_pid(installed, "razard.service")
    try:
        installed.systemctl("stop", *JOURNALD_UNITS, "systemd-journald.service")
        assert installed.show("systemd-journald.service", "ActiveState")["ActiveState"] != "active"
        installed.run("touch /srv/doom")
        installed.run(["kill", "-KILL", str(main_pid(installed, "razar-doomed.service"))])
        try:
            installed.wait_for(
                "doomed quarantined",
                lambda: status(installed)["doomed"]["state"] == "quarantined",
                timeout=120,
            )
        except AssertionError as e:  # what razard did instead, from its own log
            log = installed.run("tail -n 30 /var/lib/razard/razar.log", check=False).stdout
            pid = installed.show("razard.service", "MainPID", "NRestarts")
            raise AssertionError(
                f"{e}\nrazard {pid} (was {razard_pid}); razar.log:\n{log}"
            ) from None
        posts = installed.wait_for(
            "the console to get doomed's alert",
            lambda: [
                p
                for p in map(
                    json.loads,
                    installed.run("cat /srv/console.jsonl", check=False).stdout.splitlines(),
                )
                if p["context"]["component"] == "doomed"
            ],
            timeout=60,
        )
        assert [p["context"]["reason"] for p in posts] == ["quarantine"], posts
        assert main_pid(installed, "razard.service") == razard_pid  # the same razard throughout
        assert installed.show("razard.service", "NRestarts")["NRestarts"] == "0"
        spool = installed.run("stat -c '%U %a %s' /var/lib/razard/escalation/unjournaled.jsonl")
        assert spool.stdout.split() == ["root", "640", "0"], spool.stdout  # root's, read, emptied
    finally:
        installed.run("rm -f /srv/doom")
        installed.systemctl("start", *JOURNALD_UNITS, "systemd-journald.service")
        installed.systemctl("stop", "razar-test-console", check=False)
    # journald is back: razard's events reach it again
    ctl(installed, "quarantine", "release", "doomed")
    installed.wait_for(
        "doomed's release in the journal",
        lambda: (
            "quarantine_released"
            in installed.journal(
                "-o", "json", "RAZAR_COMPONENT=doomed", "RAZAR_EVENT=quarantine_released"
            )
        ),
        timeout=60,
    )


def test_state_made_later_is_private_too(installed: bed.Node) -> None:
    """After a quarantine, a patch and its rollback (quarantine/, snapshots/, patches/ made
    while razard ran): nothing in the state directory is readable by others."""
    made = installed.run("ls /var/lib/razard").stdout.split()
    assert {"quarantine", "snapshots", "patches"} <= set(made), made
    others = installed.run("find /var/lib/razard -perm /o=rwx").stdout.split()
    assert others == [], others
