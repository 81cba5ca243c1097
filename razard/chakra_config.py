"""The ``[chakra]`` table of razard.toml: heartbeats, layer sensors and healers.

::

    [chakra]
    runtime_dir = "/run/razard"    # heartbeats go to <runtime_dir>/heartbeat/<layer>/<component>
    heartbeat_interval = 5.0       # how often a source is expected to beat
    window_factor = 3.0            # a layer is down when its pulse is older than interval x factor
    healer_timeout = 300.0         # a healer that runs longer is killed (not healed)

    [chakra.root]                  # one optional table per layer
    interface = "eth0"             # the root sensor watches its carrier ...
    target = "192.0.2.1"           # ... and pings this target
    healer_env = { RAZAR_ROOT_MAX_RESETS_PER_HOUR = "4" }
    settle = 10.0                  # a heal is verified this long after the healer says healed

Every key is checked like the rest of the file: problems name the dotted key.
Per-layer sensor keys become the healer's ``RAZAR_*`` settings, so the sensor
and the healer always look at the same link, GPU or threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from razard.configreader import ENV_NAME_RE, Reader, has_control, join_key, typename
from razard.layers import LAYERS, Layer
from razard.layout import DEFAULT_RUNTIME_DIR

DEFAULT_HEARTBEAT_INTERVAL: Final = 5.0
DEFAULT_WINDOW_FACTOR: Final = 3.0
DEFAULT_HEALER_TIMEOUT: Final = 300.0

#: Each layer's healer: its name, and what razard runs by default (``python -m ...``).
HEALERS: Final[dict[Layer, tuple[str, tuple[str, ...]]]] = {
    "root": ("root_restore_network", ("agents.healing.root",)),
    "sacral": ("sacral_gpu_recover", ("agents.healing.sacral",)),
    "solar_plexus": ("solar_plexus_cpu_throttle", ("agents.healing.solar_plexus",)),
    "heart": ("heart_memory_repair", ("agents.healing.heart",)),
    "throat": ("throat_api_stabilize", ("agents.healing.restart", "throat")),
    "third_eye": ("third_eye_inference_flush", ("agents.healing.restart", "third_eye")),
    "crown": ("crown_full_restart", ("agents.healing.restart", "crown")),
}

#: Layers whose own sensor can take the layer down; the agent then runs the healer itself.
#: The other layers' pulse comes from their components, whose own ladders act on a failure.
SENSOR_LAYERS: Final = frozenset({"root", "sacral", "solar_plexus", "heart"})

#: Layers whose healer changes settings at run time that are put back once the layer is up.
RESTORE_LAYERS: Final = frozenset({"solar_plexus", "heart"})

_COMMON_KEYS: Final = {
    "enabled",
    "interval",
    "window",
    "healer",
    "healer_timeout",
    "healer_env",
    "settle",
}
#: A heal is verified this many sensor intervals after the healer said healed (by default).
SETTLE_INTERVALS: Final = 2.0
#: Per-layer keys, and the healer setting each one becomes.
_LAYER_KEYS: Final[dict[str, dict[str, str]]] = {
    "root": {
        "interface": "RAZAR_ROOT_INTERFACE",
        "target": "RAZAR_ROOT_TARGET",
        "netns": "RAZAR_ROOT_NETNS",
        "max_resets_per_hour": "RAZAR_ROOT_MAX_RESETS_PER_HOUR",
    },
    "sacral": {
        "gpu": "RAZAR_GPU",
        "allow_reset": "RAZAR_GPU_ALLOW_RESET",
        "max_resets_per_hour": "RAZAR_GPU_MAX_RESETS_PER_HOUR",
    },
    "solar_plexus": {
        "pressure_threshold": "RAZAR_CPU_PRESSURE_THRESHOLD",
        "pressure_file": "RAZAR_CPU_PRESSURE_FILE",
        "throttle_weight": "RAZAR_CPU_THROTTLE_WEIGHT",
    },
    "heart": {
        "pressure_threshold": "RAZAR_MEMORY_PRESSURE_THRESHOLD",
        "pressure_file": "RAZAR_MEMORY_PRESSURE_FILE",
        "meminfo_file": "RAZAR_MEMINFO_FILE",
        "min_available_ratio": "RAZAR_MEMORY_MIN_AVAILABLE_RATIO",
        "action": "RAZAR_MEMORY_ACTION",
    },
    "throat": {},
    "third_eye": {"flush_signal": "RAZAR_FLUSH_SIGNAL", "flush_grace": "RAZAR_FLUSH_GRACE"},
    "crown": {},
}
#: Defaults of the keys the sensors read themselves (the healers have the same defaults).
CPU_PRESSURE_THRESHOLD: Final = 40.0
MEMORY_PRESSURE_THRESHOLD: Final = 20.0
MEMORY_MIN_AVAILABLE_RATIO: Final = 0.05


@dataclass(frozen=True)
class LayerSettings:
    """One layer's agent: its timing, its sensor's settings and its healer."""

    layer: Layer
    enabled: bool = True
    configured: bool = False  # the file has a [chakra.<layer>] table
    interval: float = DEFAULT_HEARTBEAT_INTERVAL
    window: float = DEFAULT_HEARTBEAT_INTERVAL * DEFAULT_WINDOW_FACTOR
    healer: tuple[str, ...] = ()  # empty: the built-in healer module
    healer_timeout: float = DEFAULT_HEALER_TIMEOUT
    settings: tuple[tuple[str, str], ...] = ()  # sensor keys as given, e.g. ("interface", "eth0")
    healer_env: tuple[tuple[str, str], ...] = ()  # RAZAR_* settings for the healer
    settle: float | None = None  # None: SETTLE_INTERVALS x interval

    @property
    def settle_time(self) -> float:
        """How long after a healer said healed razard re-reads the sensor and the units."""
        return self.interval * SETTLE_INTERVALS if self.settle is None else self.settle

    @property
    def healer_name(self) -> str:
        return HEALERS[self.layer][0]

    def setting(self, key: str, default: str = "") -> str:
        return dict(self.settings).get(key, default)

    def number(self, key: str, default: float) -> float:
        raw = self.setting(key)
        return float(raw) if raw else default

    def env(self) -> dict[str, str]:
        """The healer's settings: sensor keys under their RAZAR_* names, then ``healer_env``."""
        names = _LAYER_KEYS[self.layer]
        out = {names[k]: v for k, v in self.settings if k in names}
        out.update(self.healer_env)
        return out


@dataclass(frozen=True)
class ChakraConfig:
    """The ``[chakra]`` table."""

    runtime_dir: Path = Path(DEFAULT_RUNTIME_DIR)
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    window_factor: float = DEFAULT_WINDOW_FACTOR
    healer_timeout: float = DEFAULT_HEALER_TIMEOUT
    layers: tuple[LayerSettings, ...] = field(default_factory=tuple)

    @property
    def heartbeat_dir(self) -> Path:
        return self.runtime_dir / "heartbeat"

    def layer(self, name: str) -> LayerSettings:
        for s in self.layers:
            if s.layer == name:
                return s
        window = self.heartbeat_interval * self.window_factor
        return LayerSettings(
            name,  # type: ignore[arg-type]
            interval=self.heartbeat_interval,
            window=window,
            healer_timeout=self.healer_timeout,
        )


def _scalar(r: Reader, t: Mapping[str, Any], prefix: str, key: str) -> str | None:
    """A sensor key: a string, number or boolean, kept as the string the healer gets."""
    value = t[key]
    k = join_key(prefix, key)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        if value != value or value < 0:
            r.problem(k, f"must be a number >= 0, got {value}")
            return None
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        if has_control(value) or not value.strip():
            r.problem(k, "must be a non-empty string without control characters")
            return None
        return value
    r.problem(k, f"expected a string, number or boolean, got {typename(value)}")
    return None


def _parse_layer(
    r: Reader, raw: Any, layer: Layer, defaults: ChakraConfig, base: Path
) -> LayerSettings | None:
    prefix = f"chakra.{layer}"
    t = r.table(raw, prefix)
    if t is None:
        return None
    own = _LAYER_KEYS[layer]
    r.unknown(t, prefix, _COMMON_KEYS | set(own))
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        r.problem(join_key(prefix, "enabled"), f"expected true or false, got {typename(enabled)}")
        enabled = True
    interval = r.number(
        t, prefix, "interval", defaults.heartbeat_interval, 0.0, 3600.0, lo_open=True
    )
    window = r.number(
        t, prefix, "window", interval * defaults.window_factor, 0.0, 86400.0, lo_open=True
    )
    if window < interval:
        r.problem(join_key(prefix, "window"), f"must be >= interval ({interval:g}), got {window:g}")
    timeout = r.number(
        t, prefix, "healer_timeout", defaults.healer_timeout, 0.0, 86400.0, lo_open=True
    )
    settle = r.number(t, prefix, "settle", interval * SETTLE_INTERVALS, 0.0, 3600.0)
    healer: tuple[str, ...] = ()
    if "healer" in t:
        healer = r.argv(t, prefix, "healer") or ()
        if healer and not Path(healer[0]).is_absolute():
            healer = (str(base / healer[0]), *healer[1:])
    settings = []
    for key in own:
        if key in t:
            value = _scalar(r, t, prefix, key)
            if value is not None:
                settings.append((key, value))
    if layer == "heart" and dict(settings).get("action", "memory_high") not in (
        "memory_high",
        "restart",
    ):
        r.problem(join_key(prefix, "action"), 'must be "memory_high" or "restart"')
    env: list[tuple[str, str]] = []
    if "healer_env" in t:
        et = r.table(t["healer_env"], join_key(prefix, "healer_env"))
        for name, value in (et or {}).items():
            k = join_key(join_key(prefix, "healer_env"), name)
            if not ENV_NAME_RE.fullmatch(name) or not name.startswith("RAZAR_"):
                r.problem(k, "must be a RAZAR_* environment variable name")
            elif not isinstance(value, str) or has_control(value):
                r.problem(k, "expected a string without control characters")
            else:
                env.append((name, value))
    return LayerSettings(
        layer,
        enabled=enabled,
        configured=True,
        interval=interval,
        window=window,
        healer=healer,
        healer_timeout=timeout,
        settings=tuple(settings),
        healer_env=tuple(env),
        settle=settle,
    )


def parse_chakra(
    r: Reader, raw: Any, base: Path, runtime_dir: Path = Path(DEFAULT_RUNTIME_DIR)
) -> ChakraConfig:
    """Parse the ``[chakra]`` table (``raw`` is None when the file has none).

    ``runtime_dir`` is the default for ``chakra.runtime_dir``: ``/run/razard`` for
    razard on the system bus, ``$XDG_RUNTIME_DIR/razard`` for one on a user bus.
    """
    if raw is None:
        plain = ChakraConfig(runtime_dir=runtime_dir)
        return replace(plain, layers=tuple(plain.layer(n) for n in LAYERS))
    t = r.table(raw, "chakra")
    if t is None:
        return ChakraConfig(runtime_dir=runtime_dir)
    r.unknown(
        t,
        "chakra",
        {"runtime_dir", "heartbeat_interval", "window_factor", "healer_timeout", *LAYERS},
    )
    runtime = r.string(t, "chakra", "runtime_dir", "")
    if runtime:
        runtime_dir = Path(runtime).expanduser()
        if not runtime_dir.is_absolute():
            runtime_dir = base / runtime_dir
    defaults = ChakraConfig(
        runtime_dir=runtime_dir,
        heartbeat_interval=r.number(
            t, "chakra", "heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL, 0.0, 3600.0, lo_open=True
        ),
        window_factor=r.number(t, "chakra", "window_factor", DEFAULT_WINDOW_FACTOR, 1.0, 1000.0),
        healer_timeout=r.number(
            t, "chakra", "healer_timeout", DEFAULT_HEALER_TIMEOUT, 0.0, 86400.0, lo_open=True
        ),
    )
    layers = []
    for name in LAYERS:
        if name in t:
            s = _parse_layer(r, t[name], name, defaults, base)
            layers.append(s or defaults.layer(name))
        else:
            layers.append(defaults.layer(name))
    return ChakraConfig(
        runtime_dir=defaults.runtime_dir,
        heartbeat_interval=defaults.heartbeat_interval,
        window_factor=defaults.window_factor,
        healer_timeout=defaults.healer_timeout,
        layers=tuple(layers),
    )
