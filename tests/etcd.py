"""Real etcd processes on loopback for the fleet tests: one member or a small cluster,
each with a temporary data directory and free ports. Never the host's etcd service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Member:
    name: str
    client: int
    peer: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client}"


@dataclass
class EtcdCluster:
    """``size`` etcd members on 127.0.0.1 (``start`` launches them)."""

    root: Path
    size: int = 1
    members: list[Member] = field(default_factory=list)
    tls: tuple[Path, Path, Path] | None = None  # (ca, server cert, server key): https clients

    def __post_init__(self) -> None:
        ports = _ports(2 * self.size)
        for i in range(self.size):
            d = self.root / f"m{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.members.append(
                Member(
                    f"m{i}",
                    ports[2 * i],
                    ports[2 * i + 1],
                    d / "data",
                    d / "etcd.log",
                    scheme="https" if self.tls else "http",
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def _argv(self, m: Member) -> list[str]:
        cluster = ",".join(f"{x.name}=http://127.0.0.1:{x.peer}" for x in self.members)
        return [
            ETCD,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.url,
            "--advertise-client-urls", m.url,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer}",
            "--initial-cluster", cluster,
            "--initial-cluster-token", f"razar-test-{os.getpid()}-{self.root.name}",
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            *(["--cert-file", str(self.tls[1]), "--key-file", str(self.tls[2])]
              if self.tls else []),
        ]  # fmt: skip

    def start_member(self, i: int) -> None:
        m = self.members[i]
        log = m.log.open("ab")
        m.proc = subprocess.Popen(
            self._argv(m), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def start(self, timeout: float = 30.0) -> None:
        for i in range(self.size):
            self.start_member(i)
        self.wait_healthy(timeout)

    def healthy(self, i: int) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else None
        try:
            with urllib.request.urlopen(
                self.members[i].url + "/health", timeout=1, context=ctx
            ) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        which = range(self.size) if members is None else members
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.healthy(i) for i in which):
                return
            time.sleep(0.1)
        logs = "\n".join(m.log.read_text()[-2000:] for m in self.members if m.log.exists())
        raise RuntimeError(f"etcd did not become healthy within {timeout}s:\n{logs}")

    def leader(self) -> int:
        """The index of the current leader (as the first member that answers says)."""
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            req = urllib.request.Request(m.url + "/v3/maintenance/status", data=b"{}")
            try:
                with urllib.request.urlopen(req, timeout=1) as r:
                    st = json.loads(r.read())
            except (OSError, ValueError):
                continue
            for j, other in enumerate(self.members):
                oreq = urllib.request.Request(other.url + "/v3/maintenance/status", data=b"{}")
                try:
                    with urllib.request.urlopen(oreq, timeout=1) as r:
                        if json.loads(r.read())["header"]["member_id"] == st["leader"]:
                            return j
                except (OSError, ValueError, KeyError):
                    continue
        raise RuntimeError("no etcd member names a leader")

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.members[i].proc
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait(10)
        self.members[i].proc = None

    def stop(self) -> None:
        for i in range(self.size):
            self.kill(i, signal.SIGTERM)


def make_tls(root: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    root.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=razar-test-ca")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (root / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "authorityKeyIdentifier=keyid,issuer\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return root / "ca.pem", root / "server.pem", root / "server.key"
