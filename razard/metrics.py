"""Prometheus metrics razard exports (``razar_`` prefix, base units, ``_total`` counters).

One registry per razard, served on ``[razard].metrics_address``:``metrics_port``
(127.0.0.1:9360 by default). It carries razard's own process metrics too.
"""

from __future__ import annotations

import bisect
import math
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import prometheus_client.metrics
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _float_to_go_string

from razard.states import ComponentState

#: The content type of the Prometheus text format `Metrics.render` writes.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Every component state, in `ComponentState`'s order (one series each per component).
STATES: Final = tuple(s.value for s in ComponentState)


#: connections the metrics server serves at once; a scraper needs one
MAX_CONNECTIONS: Final = 32
#: seconds a metrics connection may wait for each read or write
CONNECTION_TIMEOUT: Final = 5.0


class Registry(CollectorRegistry):
    """A `CollectorRegistry` that remembers its collectors in order, for `Metrics.render`."""

    def __init__(self) -> None:
        super().__init__()
        self.collectors: list[Collector] = []
        self._order_lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        super().register(collector)
        with self._order_lock:
            self.collectors.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        with self._order_lock:
            self.collectors.remove(collector)


class _One:
    """One collector seen as a registry, for `generate_latest`."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Any:
        return self._collector.collect()


class Metrics:
    """Every metric razard exports, on one registry."""

    def __init__(self, version: str) -> None:
        r = self.registry = Registry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Info("razar_build", "razard build information", registry=r).info({"version": version})
        lbl = ["component", "layer"]
        by_layer: list[_Family] = []  # families whose series share label values and texts
        self.up = _Family(
            "gauge",
            "razar_component_up",
            "1 when the component's unit is active",
            lbl,
            r,
            peers=by_layer,
        )
        self.healthy = _Family(
            "gauge",
            "razar_component_healthy",
            "1 when the component passes its probe",
            lbl,
            r,
            peers=by_layer,
        )
        self.quarantined = _Family(
            "gauge", "razar_component_quarantined", "1 when quarantined", lbl, r, peers=by_layer
        )
        self.state = _StateFamily(
            "razar_component_state", "1 for the component's current state", STATES, r
        )
        self.restarts = _Family(
            "counter",
            "razar_component_restarts_total",
            "Restarts razard performed",
            lbl,
            r,
            peers=by_layer,
        )
        self.failures = _Family(
            "counter",
            "razar_component_failures_total",
            "Failures razard detected",
            ["component", "layer", "kind"],
            r,
        )
        self.rungs = _Family(
            "counter", "razar_ladder_rung_total", "Ladder rungs taken", ["component", "rung"], r
        )
        by_probe: list[_Family] = []
        self.probe_duration = _Family(
            "histogram",
            "razar_probe_duration_seconds",
            "Health probe duration",
            ["component", "probe"],
            r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            peers=by_probe,
        )
        self.probes = _Family(
            "counter",
            "razar_probes_total",
            "Health probes run, by result",
            ["component", "probe", "result"],
            r,
        )
        self.probe_failures = _Family(
            "counter",
            "razar_probe_failures_total",
            "Failed health probes",
            ["component", "probe"],
            r,
            peers=by_probe,
        )
        # repair rung; the three razar_ai_* names are kept from the original runbooks
        self.ai_success = Counter(
            "razar_ai_invocation_success",
            "Repair agent invocations that healed the component",
            ["component"],
            registry=r,
        )
        self.ai_failure = Counter(
            "razar_ai_invocation_failure",
            "Repair agent invocations that did not heal (failed, refused, reverted)",
            ["component"],
            registry=r,
        )
        self.ai_retries = Counter(
            "razar_ai_invocation_retries",
            "HTTP retries of repair agent calls (429/5xx)",
            ["component"],
            registry=r,
        )
        self.agent_duration = Histogram(
            "razar_ai_agent_duration_seconds",
            "Repair agent call duration",
            ["agent"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.patches = Counter(
            "razar_patches_total",
            "Patches by what happened to them",
            ["component", "action"],
            registry=r,
        )
        self.escalations = Counter(
            "razar_escalations_total", "Repair rungs tried", ["component"], registry=r
        )
        self.escalation_warnings = Counter(
            "razar_escalation_warnings_total",
            "Times RAZAR_ESCALATION_WARNING_THRESHOLD was reached",
            ["component"],
            registry=r,
        )
        self.ready = Gauge("razar_ready", "1 once the first boot wave has settled", registry=r)
        self.bus_resyncs = Counter(
            "razar_bus_resyncs_total",
            "Re-reads of every unit's state after a bus reconnect or a systemd reload/re-exec",
            registry=r,
        )

    def set_state(self, component: str, layer: str, state: str) -> None:
        """``component`` is now in ``state`` (a `ComponentState`)."""
        self.restarts.labels(component, layer)  # 0 from the start, not absent until the first
        self.state.set(component, str(state))
        self.quarantined.labels(component, layer).set(
            1 if state == ComponentState.QUARANTINED else 0
        )
        if state != ComponentState.HEALTHY:
            self.healthy.labels(component, layer).set(0)

    def forget(self, component: str, layer: str) -> None:
        """Drop a removed component's series so dashboards do not show it forever."""
        for metric in (self.up, self.healthy, self.quarantined, self.restarts):
            _remove(metric, component, layer)
        self.state.forget(component)
        for kind in ("exit", "probe", "start"):
            _remove(self.failures, component, layer, kind)
        for rung in ("restart", "escalate", "quarantine"):
            _remove(self.rungs, component, rung)
        for probe in ("exec", "http", "tcp"):
            _remove(self.probe_duration, component, probe)
            _remove(self.probe_failures, component, probe)
            for result in ("ok", "failed"):
                _remove(self.probes, component, probe, result)

    def render(self) -> bytes:
        """The whole registry in the Prometheus text format (what `generate_latest` writes),
        the per-component families by their fast path."""
        with self.registry._order_lock:
            collectors = list(self.registry.collectors)
        out: list[str] = []
        for c in collectors:
            if isinstance(c, _Family | _StateFamily):
                c.render(out)
            else:
                out.append(generate_latest(_One(c)).decode("utf-8"))
        return "".join(out).encode("utf-8")

    def serve(self, address: str, port: int) -> int:
        """Serve `render` over HTTP (any path) in a thread; returns the bound port (useful
        when ``port`` is 0).

        Bounded, since anyone on the node can connect: at most `MAX_CONNECTIONS` at once
        (one more is accepted and closed at once), each given `CONNECTION_TIMEOUT`
        seconds per read or write, so idle connections cannot use up razard's
        descriptors (which its probes, journal and state files need)."""
        render = self.render

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT  # socket timeout: an idle client is dropped

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    body = render()
                except Exception as e:  # a scrape must not take the server thread down
                    self.send_error(500, f"cannot render metrics: {e}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape every few seconds is not news

        server = _BoundedServer((address, port), Handler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return int(server.server_address[1])


class _BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server with at most `MAX_CONNECTIONS` connections being served."""

    daemon_threads = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        # the class's own is IPv4: an IPv6 metrics_address ("::1") failed to resolve
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # not HTTPServer's own, which asks the resolver for the address's host name
        # (socket.getfqdn): a reverse lookup nothing here uses, that can stall razard's
        # start when DNS does not answer and loads the idna codec and unicodedata for good
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: this one is closed, not queued
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away or timed out is not news


def _remove(metric: Gauge | Counter | Histogram | _Family, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


# --------------------------------------------------------------------------- per-component series
#
# The series that grow with the number of components (a dozen per component, seventeen
# for the probe histogram) are kept by the small classes below instead of prometheus_client's
# wrappers: its exposition builds a Sample and validates and escapes every label of every
# line on each scrape, about 200 ms for 500 components, while a Prometheus scrape must
# stay well under its interval and the event loop shares the interpreter with it. These
# keep each series' label text ready and render a line with one string format. They are
# collectors on the same registry, so `registry.collect()` and `get_sample_value` see them
# as before, and `Metrics.render` writes exactly what `generate_latest` would.


def floatToGoString(v: float) -> str:  # noqa: N802 (prometheus_client's name)
    """How Prometheus' Go code prints a float (``+Inf``, ``1e+06``)."""
    return str(_float_to_go_string(v))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _go_float(v: float) -> str:
    """`floatToGoString`, with the common case (a finite float under 1e6) done inline."""
    if -1e6 < v < 1e6:
        return repr(v)
    return floatToGoString(v)


def _label_text(pairs: Sequence[tuple[str, str]]) -> str:
    """``k="v",...`` sorted by name, values escaped as the text format wants."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs))


#: the last `_created_now` text and the millisecond it was made in
_last_created: tuple[int, str] = (0, "")


def _created_now() -> str:
    """The ``_created`` text of a series made now, to the millisecond: the series razard
    makes together (every component's, at start and at each reload) share one string
    rather than keep one each (2500 at 500 components; a counter's creation time is
    read as a reset marker, for which a millisecond is fine)."""
    global _last_created
    ms = int(time.time() * 1000)
    last_ms, text = _last_created
    if ms != last_ms:
        text = floatToGoString(ms / 1000)
        _last_created = (ms, text)
    return text


def _use_created() -> bool:
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class _GaugeSeries:
    """One labelled series of a gauge; ``text`` is its labels as the text format writes them
    (``k="v",...``). No ``_created`` line, so no creation time is kept."""

    __slots__ = ("value", "labels", "text")

    def __init__(self, labels: tuple[str, ...], text: str) -> None:
        self.value = 0.0
        self.labels = labels
        self.text = text

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _Series:
    """One labelled series of a counter, as `_GaugeSeries`, with its creation time.

    The time is kept only as its ``_created`` text (`_created_now`): `floatToGoString`
    writes every digit of ``repr``, so the float reads back from it exactly (`created`),
    and a float object beside the text was 32 bytes a series more."""

    __slots__ = ("value", "created_text", "labels", "text")

    def __init__(self, labels: tuple[str, ...], text: str) -> None:
        self.value = 0.0
        self.created_text = _created_now()  # it never changes: formatted once, shared
        self.labels = labels
        self.text = text

    @property
    def created(self) -> float:
        return float(self.created_text)

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class _HistogramSeries:
    """One labelled series of a histogram: per-bucket counts (not cumulative) and the sum.

    A bucket's labels are ``text`` with its ``le`` label put in at ``split`` (where the
    name ``le`` sorts), so no label text is kept per bucket: fourteen strings a series
    were about 1.3 KiB per component."""

    __slots__ = ("counts", "sum", "created_text", "labels", "text", "split", "_bounds")

    def __init__(
        self, labels: tuple[str, ...], text: str, split: int, bounds: tuple[float, ...]
    ) -> None:
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created_text = _created_now()  # as `_Series`
        self.labels = labels
        self.text = text
        self.split = split
        self._bounds = bounds

    @property
    def created(self) -> float:
        return float(self.created_text)

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1.0


_AnySeries = _GaugeSeries | _Series | _HistogramSeries


class _Family:
    """A labelled gauge, counter or histogram: ``labels(...)`` and ``remove(...)`` like
    prometheus_client's, a collector for the registry, and a fast `render`."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = (),
        peers: list[_Family] | None = None,
    ) -> None:
        """``peers``: families with the same label names (this one joins them); a series
        takes the label values and text of a peer's series for the same values rather than
        a copy of its own (four families per component share them)."""
        self.kind = kind
        self.name = name.removesuffix("_total") if kind == "counter" else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        if self.bounds and self.bounds[-1] != math.inf:
            self.bounds += (math.inf,)
        self._series: dict[tuple[str, ...], _AnySeries] = {}
        # a bucket's label text is the series' with ``le`` put in where its name sorts:
        # after the first `_le_at` labels, as one of these pieces (commas included)
        self._le_at = sum(1 for n in self.labelnames if n < "le")
        if self._le_at < len(self.labelnames):
            piece = 'le="{}",'  # labels follow
        else:
            piece = ',le="{}"' if self.labelnames else 'le="{}"'
        self._le_pieces = tuple(piece.format(floatToGoString(b)) for b in self.bounds)
        self._peers = peers if peers is not None else []
        self._peers.append(self)
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> Any:
        """The series for ``values`` (made on first use), as prometheus_client's ``labels``."""
        series = self._series.get(values)
        if series is not None:
            return series
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
        values = tuple(str(v) for v in values)
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = self._new(values)
                # keyed by the series' own label values: a peer's, where one has them
                self._series[series.labels] = series
        return series

    def _new(self, values: tuple[str, ...]) -> _AnySeries:
        for peer in self._peers:
            twin = peer._series.get(values)  # a dict read: atomic, no lock of the peer's needed
            if twin is not None:
                values, text = twin.labels, twin.text
                break
        else:
            text = ""
        pairs = sorted(zip(self.labelnames, values, strict=True))
        text = text or _label_text(pairs)
        if self.kind == "histogram":
            at = self._le_at
            # where a bucket's ``le`` piece goes: after the first ``at`` labels (and their comma)
            if at == len(pairs):
                split = len(text)
            else:
                split = len(_label_text(pairs[:at])) + 1 if at else 0
            return _HistogramSeries(values, text, split, self.bounds)
        return _GaugeSeries(values, text) if self.kind == "gauge" else _Series(values, text)

    def remove(self, *values: str) -> None:
        """Drop one series; KeyError when there is none."""
        with self._lock:
            del self._series[tuple(values)]

    def _snapshot(self) -> list[_AnySeries]:
        with self._lock:
            return list(self._series.values())

    # --------------------------------------------------------- collector (registry API)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> list[Metric]:
        created = _use_created()
        series = self._snapshot()
        if self.kind == "gauge":
            gauge = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for s in series:
                assert isinstance(s, _GaugeSeries)
                gauge.add_metric(list(s.labels), s.value)
            return [gauge]
        if self.kind == "counter":
            counter = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for s in series:
                assert isinstance(s, _Series)
                counter.add_metric(list(s.labels), s.value, created=s.created if created else None)
            return [counter]
        hist = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for s in series:
            assert isinstance(s, _HistogramSeries)
            acc, buckets = 0.0, []
            for bound, n in zip(self.bounds, s.counts, strict=True):
                acc += n
                buckets.append((floatToGoString(bound), acc))
            hist.add_metric(list(s.labels), buckets, s.sum)
            if created:
                labels = dict(zip(self.labelnames, s.labels, strict=True))
                hist.samples.append(Sample(self.name + "_created", labels, s.created, None, None))
        return [hist]

    # --------------------------------------------------------- text exposition

    def render(self, out: list[str]) -> None:
        """Append this family in the Prometheus text format, as `generate_latest` writes it."""
        name, doc = self.name, self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        created = _use_created()
        late: list[str] = []
        series = self._snapshot()
        if self.kind == "gauge":
            out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
            for s in series:
                out.append(f"{name}{{{s.text}}} {_go_float(s.value)}\n")  # type: ignore[union-attr]
            return
        if self.kind == "counter":
            out.append(f"# HELP {name}_total {doc}\n# TYPE {name}_total counter\n")
            for s in series:
                text = s.text
                out.append(f"{name}_total{{{text}}} {_go_float(s.value)}\n")  # type: ignore[union-attr]
                if created:
                    late.append(f"{name}_created{{{text}}} {s.created_text}\n")  # type: ignore[union-attr]
        else:
            out.append(f"# HELP {name} {doc}\n# TYPE {name} histogram\n")
            pieces = self._le_pieces
            for s in series:
                assert isinstance(s, _HistogramSeries)
                text = s.text
                head, tail = text[: s.split], text[s.split :]
                acc = 0.0
                for piece, n in zip(pieces, s.counts, strict=True):
                    acc += n
                    out.append(f"{name}_bucket{{{head}{piece}{tail}}} {_go_float(acc)}\n")
                out.append(f"{name}_count{{{text}}} {_go_float(acc)}\n")
                out.append(f"{name}_sum{{{text}}} {_go_float(s.sum)}\n")
                if created:
                    late.append(f"{name}_created{{{text}}} {s.created_text}\n")
        if late:
            out.append(f"# HELP {name}_created {doc}\n# TYPE {name}_created gauge\n")
            out.extend(late)


class _StateFamily:
    """``razar_component_state{component, state}``: one series per state per component
    (1 for the current one, 0 for the others), as a gauge family writes them, but kept as
    one state per component: eight series each were 4,000 objects, label texts and dict
    entries at 500 components (about 1.3 MiB) for what is one word each."""

    def __init__(
        self, name: str, documentation: str, states: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = ("component", "state")
        self.states = tuple(states)
        #: each state's one string, kept for every component in it (not the caller's copy)
        self._words = {s: s for s in self.states}
        self._state: dict[str, str] = {}  # component -> its state, in first-set order
        self._text: dict[str, str] = {}  # component -> its escaped label value
        self._lock = threading.Lock()
        registry.register(self)

    def set(self, component: str, state: str) -> None:
        """``component`` is now in ``state`` (a state outside `states` gives all zeros)."""
        state = self._words.get(state, state)
        with self._lock:
            if component not in self._text:
                self._text[component] = _escape(component)
            self._state[component] = state

    def forget(self, component: str) -> None:
        with self._lock:
            self._state.pop(component, None)
            self._text.pop(component, None)

    def _snapshot(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(c, self._text[c], s) for c, s in self._state.items()]

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> list[Metric]:
        gauge = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for component, _text, current in self._snapshot():
            for s in self.states:
                gauge.add_metric([component, s], 1.0 if s == current else 0.0)
        return [gauge]

    def render(self, out: list[str]) -> None:
        """Append the family in the text format, as `generate_latest` writes it."""
        name, doc = self.name, self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        for _component, text, current in self._snapshot():
            for s in self.states:
                value = "1.0" if s == current else "0.0"
                out.append(f'{name}{{component="{text}",state="{s}"}} {value}\n')
