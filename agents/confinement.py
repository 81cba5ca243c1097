"""The healer's confinement: each healer runs as its own transient systemd unit, with only
the privileges its layer needs (`properties` builds that unit; `agents.healer` starts it).

razard's own unit is locked down (see ``units/razard.service``): it cannot
configure links, reset GPUs or enter namespaces. A healer that must do one of
those gets exactly that privilege in its own ``razar-heal-<layer>-<id>.service``
(``systemd-run`` over D-Bus), and nothing else:

========================  ==============================================
layer                     capabilities
========================  ==============================================
root                      CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN
                          (``ip link``, ``ping``, ``ip netns exec``)
sacral                    CAP_SYS_ADMIN, CAP_DAC_OVERRIDE
                          (``nvidia-smi --gpu-reset``, /dev/nvidia*)
solar_plexus, heart,      none: they ask systemd over D-Bus
throat, third_eye, crown
========================  ==============================================

Every healer unit also has ``ProtectSystem=strict`` (the whole tree read-only
but /dev, /proc and /sys) with write access only to razard's state directory
and the healer's output directory, ``NoNewPrivileges``,
``ProtectHome=read-only``, ``RestrictSUIDSGID``, ``LockPersonality`` and
``RestrictRealtime``; ``ProtectKernelModules`` but for sacral (nvidia's
modules), ``ProtectControlGroups`` but for root (with it `ip netns exec` cannot
see /run/netns), and ``PrivateTmp`` but for root and sacral and unless a path
it needs lies under ``/tmp`` (tests). Not ``ProtectKernelTunables``: its
read-only remount of /proc/sys fails the unit (226/NAMESPACE) inside
containers, where CI and many nodes' agents run.

The healer's stdout goes to a file razard reads back (the JSON result); its
stderr goes to the journal under ``razar-heal-<layer>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

#: capability numbers from linux/capability.h
CAPS: Final = {
    "CAP_DAC_OVERRIDE": 1,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_ADMIN": 21,
}
LAYER_CAPS: Final[dict[str, tuple[str, ...]]] = {
    "root": ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"),
    "sacral": ("CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"),
}
#: layers whose healer enters other namespaces (``ip netns exec``) or resets devices
NO_PRIVATE_TMP: Final = frozenset({"root", "sacral"})
TMP_ROOTS: Final = (Path("/tmp"), Path("/var/tmp"))

Property = tuple[str, str, Any]


def identifier(layer: str) -> str:
    """The SYSLOG_IDENTIFIER a layer's healer logs under (``razar-heal-solar-plexus``)."""
    return f"razar-heal-{layer.replace('_', '-')}"


def unit_name(layer: str, run_id: str) -> str:
    return f"{identifier(layer)}-{run_id}.service"


def capability_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPS[name]
    return mask


def _under_tmp(paths: Iterable[Path]) -> bool:
    return any(p == t or t in p.parents for p in paths for t in TMP_ROOTS)


def properties(
    layer: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    output: Path,
    writable: Sequence[Path],
    readable: Sequence[Path] = (),
    timeout: float,
    privileged: bool | None = None,
) -> list[Property]:
    """The transient unit's properties for ``layer``'s healer.

    ``privileged`` (default: razard runs as root) adds the capability bounding
    set and the namespace-based protections; an unprivileged user manager
    cannot apply them, so it gets ``NoNewPrivileges`` and the output file only.
    """
    if privileged is None:
        privileged = os.geteuid() == 0
    props: list[Property] = [
        ("Description", "s", f"razar {layer} layer healer"),
        ("Type", "s", "oneshot"),
        ("ExecStart", "a(sasb)", [(argv[0], list(argv), False)]),
        ("Environment", "as", [f"{k}={v}" for k, v in env.items()]),
        ("WorkingDirectory", "s", "/"),
        ("StandardOutputFileToTruncate", "s", str(output)),
        ("SyslogIdentifier", "s", identifier(layer)),
        ("TimeoutStartUSec", "t", max(1, int(timeout * 1_000_000))),
        ("KillMode", "s", "control-group"),
        ("NoNewPrivileges", "b", True),
    ]
    if not privileged:
        return props
    rw = [str(p) for p in dict.fromkeys([*writable, output.parent])]
    props += [
        ("CapabilityBoundingSet", "t", capability_mask(LAYER_CAPS.get(layer, ()))),
        ("ProtectSystem", "s", "strict"),
        ("ProtectHome", "s", "read-only"),
        ("ReadWritePaths", "as", rw),
        ("RestrictSUIDSGID", "b", True),
        ("LockPersonality", "b", True),
        ("RestrictRealtime", "b", True),
    ]
    if layer != "sacral":
        props.append(("ProtectKernelModules", "b", True))  # sacral may need nvidia's
    if layer != "root":
        # with it, the netns mounts under /run/netns vanish from the healer's view and
        # `ip netns exec` fails (seen on systemd 252)
        props.append(("ProtectControlGroups", "b", True))
    if layer not in NO_PRIVATE_TMP and not _under_tmp([*writable, output, *readable]):
        props.append(("PrivateTmp", "b", True))
    return props
