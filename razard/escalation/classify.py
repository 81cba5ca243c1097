"""What a journal entry or log record means for escalation: pure functions, no I/O.

razard's own events carry ``RAZAR_EVENT`` (see `razard.journal.EventLog`); a
component's output carries ``RAZAR_COMPONENT`` (the field razard's units add)
or its unit's name. ``RAZAR_*`` fields are believed only in entries razar's own
(root) processes sent, and a unit's output is known by journald's trusted
fields (`razard.escalation.trust`): anyone can send the journal the rest.
Each entry becomes at most one `Observation`:

=====================  ================================================  ==============
observation            from                                              about
=====================  ================================================  ==============
``quarantine``         ``operator_alert`` with a component (razard gave  the component
                       up on it: quarantined, or supervision stopped)
``warning_threshold``  ``escalation_warning`` (the ladder reached         the component
                       RAZAR_ESCALATION_WARNING_THRESHOLD)
``layer_down``         ``chakra_escalated``, or ``operator_alert`` with   the layer
                       a layer only (down, and its healer did not heal)
``recovered``          ``state_healthy`` / ``chakra_up``;                 component/layer;
                       ``fleet_breaker_reset`` (an operator reset it)     ``fleet:breaker``
``root_down``          ``chakra_down`` of the root layer (inhibits the    root
                       other layers' alerts until its ``chakra_up``)
``fleet_breaker``      ``fleet_breaker_tripped`` (this node's action      ``fleet:breaker``
                       tripped the fleet's breaker: one alert per fleet)
``failure``            razard events at WARNING or worse about a          the component
                       component; component output at ERR or worse or
                       that reads like an error; failed repair records
=====================  ================================================  ==============
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Literal

from razard.escalation import trust
from razard.escalation.signature import signature

Kind = Literal[
    "failure",
    "quarantine",
    "warning_threshold",
    "layer_down",
    "recovered",
    "root_down",
    "fleet_breaker",
]

ROOT_LAYER: Final = "root"
RAZARD_IDENTIFIER: Final = "razard"
#: razard events worse than this priority (syslog: lower is worse) count as failures
FAILURE_PRIORITY: Final = 4
#: component output at this priority or worse is a failure whatever it says
OUTPUT_ERROR_PRIORITY: Final = 3
#: component output that reads like an error (most programs log everything at INFO)
ERROR_WORDS: Final = re.compile(
    r"(?i)\b(error|errno|exception|traceback|fatal|panic|critical|failed|failure|"
    r"segfault|segmentation fault|out of memory|oom|killed|abort(?:ed)?|refused)\b"
)
#: razard events that are decisions or notices, not failures, whatever their priority
_NOT_FAILURES: Final = frozenset(
    {
        "escalation_interrupted",
        "agent_skipped",
        "agent_waiting",
        "quarantine_released",
        "chakra_down",
        "chakra_up",
        "alert_dropped",
        "escalation_notifier",
    }
)
#: repair records (razar_ai_invocations.json / razar_ai_patches.json) that are failures
FAILED_STATUSES: Final = frozenset({"failed", "refused", "reverted", "aborted"})

#: The fields `from_journal` reads (what the notifier asks journalctl for; the cursor and
#: the timestamps come with every entry)
JOURNAL_FIELDS: Final = (
    "MESSAGE",
    "PRIORITY",
    "RAZAR_EVENT",
    "RAZAR_COMPONENT",
    "RAZAR_LAYER",
    "SYSLOG_IDENTIFIER",
    "_SYSTEMD_UNIT",
    "_SYSTEMD_USER_UNIT",
    "_HOSTNAME",
    "_SOURCE_REALTIME_TIMESTAMP",  # the notifier's order with spooled events
    *trust.FIELDS,
)

SIG_QUARANTINE: Final = "quarantined"
SIG_WARNING: Final = "escalation_warning"
SIG_LAYER_DOWN: Final = "layer_down"
SIG_FLEET_BREAKER: Final = "fleet_breaker"
#: the component a fleet breaker alert is filed under (one per fleet, not per node)
FLEET_COMPONENT: Final = "fleet:breaker"


@dataclass(frozen=True)
class Observation:
    """One thing the notifier learned from one entry."""

    kind: Kind
    ts: float  # when it happened (the entry's own time)
    host: str
    component: str  # "" for a layer-level observation
    layer: str
    message: str
    event: str = ""  # RAZAR_EVENT, or "" for a component's own output

    @cached_property
    def signature(self) -> str:
        """The failure signature (for ``failure``), or the fixed one of the kind."""
        if self.kind == "quarantine":
            return SIG_QUARANTINE
        if self.kind == "warning_threshold":
            return SIG_WARNING
        if self.kind == "layer_down":
            return SIG_LAYER_DOWN
        if self.kind == "fleet_breaker":
            return SIG_FLEET_BREAKER
        sig = signature(self.message)
        return f"{self.event}: {sig}" if self.event else sig


def layer_component(layer: str) -> str:
    """The component name a layer-level alert is filed under (``layer:root``)."""
    return f"layer:{layer}"


def entry_time(entry: Mapping[str, str], default: float) -> float:
    raw = entry.get("__REALTIME_TIMESTAMP", "")
    return int(raw) / 1e6 if raw.isdigit() else default


def from_journal(
    entry: Mapping[str, str],
    *,
    units: Mapping[str, str],
    layers: Mapping[str, str],
    host: str,
    now: float,
    fixed_host: str = "",
) -> Observation | None:
    """The observation in one journal entry (``{field: text}``, as `JournalSource`
    reads them), or None.

    ``units`` maps unit names to components, ``layers`` components to layers
    (both from the config). The host is ``fixed_host`` when set (the config's
    ``host``), else the entry's ``_HOSTNAME``, else ``host``.
    """
    get = entry.get  # called for every entry the notifier reads: kept lean
    # RAZAR_* fields count only from razar's own (root) processes: anyone can send them
    own = trust.from_razar(entry)
    event = get("RAZAR_EVENT", "") if own else ""
    component = get("RAZAR_COMPONENT", "") if own else ""
    if not component and not event:
        component = units.get(trust.unit_of(entry) or "", "")
        if not component:
            return None
    message = get("MESSAGE", "")
    prio_raw = get("PRIORITY", "")
    priority = int(prio_raw) if prio_raw.isdigit() else 6
    if not event and priority > OUTPUT_ERROR_PRIORITY and not ERROR_WORDS.search(message):
        return None  # a component's ordinary output: the bulk of what is read
    layer = (get("RAZAR_LAYER") if own else None) or layers.get(component, "")
    ts = entry_time(entry, now)
    hostname = fixed_host or get("_HOSTNAME") or host

    def obs(kind: Kind, comp: str = component) -> Observation:
        return Observation(kind, ts, hostname, comp, layer, message, event)

    if event:
        return _from_event(event, priority, component, layer, obs)
    return obs("failure")


def _from_event(
    event: str, priority: int, component: str, layer: str, obs: Callable[..., Observation]
) -> Observation | None:
    if event == "fleet_breaker_tripped":  # only the node whose action tripped it says so
        return obs("fleet_breaker", FLEET_COMPONENT)
    if event == "fleet_breaker_reset":  # resolves it where it was raised
        return obs("recovered", FLEET_COMPONENT)
    if event == "operator_alert":
        if component:
            return obs("quarantine")
        return obs("layer_down", layer_component(layer)) if layer else None
    if event == "chakra_escalated" and layer:
        return obs("layer_down", layer_component(layer))
    if event == "escalation_warning" and component:
        return obs("warning_threshold")
    if event == "state_healthy" and component:
        return obs("recovered")
    if event == "chakra_up" and layer:
        return obs("recovered", layer_component(layer))
    if event == "chakra_down" and layer == ROOT_LAYER:
        return obs("root_down", layer_component(layer))
    if component and priority <= FAILURE_PRIORITY and event not in _NOT_FAILURES:
        return obs("failure")
    return None


def from_record(
    source: str, record: Mapping[str, Any], *, layers: Mapping[str, str], host: str, now: float
) -> Observation | None:
    """A failed repair attempt or reverted/refused patch from a JSON-lines log, or None."""
    status = record.get("status")
    component = record.get("component")
    if status not in FAILED_STATUSES or not isinstance(component, str) or not component:
        return None
    agent = record.get("agent") or "?"
    reason = str(record.get("reason") or record.get("error") or "")
    ts = record.get("unix")
    when = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else now
    message = f"{agent} {status}: {reason}"
    return Observation("failure", when, host, component, layers.get(component, ""), message, source)
