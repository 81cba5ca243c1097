"""Results out: ``results.json`` (every figure and sample), ``results.md`` (the tables and
targets), ``recovery.png`` (recovery-time distributions)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bench import timeline
from bench.stats import ratio

SYS = ("razard", "razard-nice", "systemd", "supervisord")
IDLE = ("razard", "razard+probes", "systemd", "supervisord")


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)


def fmt(x: Any, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if _ok(x) else "–"


def cell(s: dict[str, Any] | None, digits: int = 1, p90: bool = False) -> str:
    """``median [min–max]`` (and p90) of one summary."""
    if not s or not s.get("n"):
        return "–"
    text = f"**{fmt(s['median'], digits)}** [{fmt(s['min'], digits)}–{fmt(s['max'], digits)}]"
    return text + (f" p90 {fmt(s['p90'], digits)}" if p90 else "")


def xratio(a: float, b: float) -> str:
    r = ratio(a, b)
    return f"{r:.2f}x" if _ok(r) else "–"


def _med(block: dict[str, Any], kind: str) -> float:
    s = block.get("systems", {}).get(kind) or block.get(kind) or {}
    v = s.get("median", math.nan)
    return float(v) if _ok(v) else math.nan


def _p90(block: dict[str, Any], kind: str) -> float:
    v = block.get("systems", {}).get(kind, {}).get("p90", math.nan)
    return float(v) if _ok(v) else math.nan


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 6 with the figure it is judged on and met (None: no figure)."""
    sc = res["scenarios"]
    out: list[dict[str, Any]] = []

    def add(name: str, figure: str, met: bool | None) -> None:
        out.append({"target": name, "figure": figure, "met": met})

    def judged(*xs: float) -> bool:
        return all(_ok(x) for x in xs)

    rec = sc.get("recovery", {})
    r, s, v = _med(rec, "razard"), _med(rec, "systemd"), _med(rec, "supervisord")
    add(
        "Recovery median within 1.5x of systemd native",
        f"{xratio(r, s)} ({fmt(r)} vs {fmt(s)} ms)",
        ratio(r, s) <= 1.5 if judged(r, s) else None,
    )
    add(
        "Recovery median faster than supervisord",
        f"{xratio(r, v)} ({fmt(r)} vs {fmt(v)} ms)",
        r < v if judged(r, v) else None,
    )
    r, s = _med(rec, "razard"), _med(rec, "systemd")
    add(
        "Recovery median within 1.1x of systemd native (issue 18)",
        f"{xratio(r, s)} ({fmt(r)} vs {fmt(s)} ms)",
        ratio(r, s) <= 1.1 if judged(r, s) else None,
    )
    lr = sc.get("load_recovery", {})
    for kind in ("razard", "razard-nice"):
        r, s = _p90(lr, kind), _p90(lr, "systemd")
        if lr:
            add(
                f"Under load: {kind} recovery p90 within 2x of systemd native's (issue 18)",
                f"{xratio(r, s)} ({fmt(r)} vs {fmt(s)} ms)",
                ratio(r, s) <= 2.0 if judged(r, s) else None,
            )
    bt = sc.get("boot", {})
    r, s = _med(bt, "razard"), _med(bt, "systemd")
    if bt:
        add(
            f"Boot of {bt.get('comps', '?')} in {bt.get('waves', '?')} waves within 1.25x of "
            "systemd (issue 18)",
            f"{xratio(r, s)} ({fmt(r, 2)} vs {fmt(s, 2)} s)",
            ratio(r, s) <= 1.25 if judged(r, s) else None,
        )
    st = sc.get("storm", {})
    r, s = _med(st, "razard"), _med(st, "systemd")
    add(
        f"Crash storm ({st.get('comps', '?')} killed) within 1.5x of systemd native",
        f"{xratio(r, s)} ({fmt(r, 2)} vs {fmt(s, 2)} s)",
        ratio(r, s) <= 1.5 if judged(r, s) else None,
    )
    idle = sc.get("idle", {}).get("sizes", {})
    if idle:
        big = max(idle, key=int)
        at = idle[big]
        p = at.get("razard+probes") or {}
        cpu, mem = p.get("cpu_pct", math.nan), p.get("peak_rss_mib", math.nan)
        add(
            f"Idle at {big} with TCP probes: under 2% of one core",
            f"{fmt(cpu, 2)}%",
            cpu < 2.0 if judged(cpu) else None,
        )
        add(
            f"Idle at {big} with TCP probes: under 1% of one core (issue 18)",
            f"{fmt(cpu, 2)}%",
            cpu < 1.0 if judged(cpu) else None,
        )
        add(
            f"Idle at {big} with TCP probes: RSS under 40 MiB (issue 18)",
            f"{fmt(mem)} MiB",
            mem < 40.0 if judged(mem) else None,
        )
        add(
            f"Idle at {big} with TCP probes: RSS under 100 MiB",
            f"{fmt(mem)} MiB",
            mem < 100.0 if judged(mem) else None,
        )
        z, sv = at.get("razard") or {}, at.get("supervisord") or {}
        zc, sc_ = z.get("cpu_pct", math.nan), sv.get("cpu_pct", math.nan)
        zm, sm = z.get("peak_rss_mib", math.nan), sv.get("peak_rss_mib", math.nan)
        add(
            f"Idle at {big} without probes: CPU no worse than supervisord",
            f"{fmt(zc, 2)}% vs {fmt(sc_, 2)}%",
            zc <= sc_ if judged(zc, sc_) else None,
        )
        add(
            f"Idle at {big} without probes: RSS no worse than supervisord",
            f"{fmt(zm)} vs {fmt(sm)} MiB",
            zm <= sm if judged(zm, sm) else None,
        )
    ctl = sc.get("idle", {}).get("ctl_status", {})
    if ctl:
        m = ctl.get("median_ms", math.nan)
        add(
            "`razarctl status` start to exit under 150 ms (issue 18)",
            f"{fmt(m)} ms",
            m < 150.0 if judged(m) else None,
        )
    scr = sc.get("scrape", {})
    for label in ("razard", "razard+probes"):
        m = _med(scr, label)
        add(
            f"Scrape at {scr.get('comps', '?')} ({label}): median under 50 ms",
            f"{fmt(m)} ms",
            m < 50.0 if judged(m) else None,
        )
    nt = sc.get("notifier", {})
    rate, ceil = nt.get("notifier_lps", math.nan), nt.get("journalctl_lps", math.nan)
    add(
        "Notifier at least half the journalctl ceiling",
        f"{xratio(rate, ceil)}" + (f" ({nt['not_run']})" if "not_run" in nt else ""),
        ratio(rate, ceil) >= 0.5 if judged(rate, ceil) else None,
    )
    return out


def markdown(res: dict[str, Any]) -> str:
    sc, meta = res["scenarios"], res["meta"]
    lines = [
        "# razar benchmarks: razard, systemd native, supervisord",
        "",
        f"Run {meta['date']} on {meta['host']}; `{meta['command']}` "
        f"({'smoke' if meta['smoke'] else 'full'}, scale {meta['scale']:g}, "
        f"components x{meta.get('comps', 1):g}, "
        f"{meta['seconds']:.0f} s). Cells: **median** [min–max] over trials; ratios are "
        "razard's median over the peer's, from this run.",
        "",
        "| scenario | razard | systemd native | supervisord | razard / systemd "
        "| razard / supervisord |",
        "|---|---|---|---|---|---|",
    ]
    rec, st, bt = sc.get("recovery", {}), sc.get("storm", {}), sc.get("boot", {})
    rows = [
        (
            f"1. Recovery after SIGKILL, ms ({rec.get('systems', {}).get('razard', {}).get('n', 0)}"
            " trials)",
            rec,
            1,
            True,
        ),
        (f"2. Crash storm: {st.get('comps', '?')} killed, s until all ready", st, 2, False),
        (
            f"3. Boot: {bt.get('comps', '?')} in {bt.get('waves', '?')} waves, s until all ready",
            bt,
            2,
            False,
        ),
    ]
    for title, block, digits, p90 in rows:
        s = block.get("systems", {})
        lines.append(
            f"| {title} | {cell(s.get('razard'), digits, p90)} | "
            f"{cell(s.get('systemd'), digits, p90)} | {cell(s.get('supervisord'), digits, p90)} | "
            f"{xratio(_med(block, 'razard'), _med(block, 'systemd'))} | "
            f"{xratio(_med(block, 'razard'), _med(block, 'supervisord'))} |"
        )
    load = sc.get("load")
    if load:
        lr, ls = sc.get("load_recovery", {}), sc.get("load_storm", {})
        lines += [
            "",
            f"## Under load: {load['method']}, every CPU busy",
            "",
            "Scenarios 1 and 2 again, the load running throughout; `razard-nice` is razard "
            "at Nice=-5 (as `Nice=` in its unit would set it). Ratios are of p90s.",
            "",
            "| system | 1. recovery ms | 2. crash storm s | recovery p90 / systemd's |",
            "|---|---|---|---|",
        ]
        sd_p90 = _p90(lr, "systemd")
        for kind in load["systems"]:
            lines.append(
                f"| {kind} | {cell(lr.get('systems', {}).get(kind), 1, True)} "
                f"| {cell(ls.get('systems', {}).get(kind), 2, True)} "
                f"| {xratio(_p90(lr, kind), sd_p90)} |"
            )
        if sc.get("load_timeline"):
            lines += [
                "",
                "### Where recovery's time goes under load",
                "",
                timeline.markdown(sc["load_timeline"], meta["command"]),
            ]
    if bt.get("razard_waves"):
        lines += [
            "",
            "## Where razard's boot goes, wave by wave (its last trial; ms after razard_starting)",
            "",
            timeline.boot_markdown(bt["razard_waves"]),
        ]
    nu = bt.get("systems", {}).get("razard-no-uptime") or {}
    if nu.get("n"):
        lines += [
            "",
            "Without its up-time rule (`razard-no-uptime`: start_timeout 1 ms, so a component "
            "counts healthy once its start job is done, which is all systemd's `Type=exec` "
            "ordering and supervisord's `startsecs=0` wait for) razard boots the same "
            f"{bt.get('comps', '?')} in {cell(nu, 2)} s, "
            f"{xratio(_med(bt, 'razard-no-uptime'), _med(bt, 'systemd'))} of systemd native; "
            f"with the rule (0.1 s up, the row above) {fmt(_med(bt, 'razard'), 2)} s.",
        ]
    if sc.get("timeline"):
        lines += [
            "",
            "## Where recovery's time goes",
            "",
            timeline.markdown(sc["timeline"], meta["command"]),
        ]
    idle = sc.get("idle", {})
    if idle.get("sizes"):
        lines += [
            "",
            f"4. Idle cost over {idle['seconds']:g} s: CPU % of one core (CPU seconds) "
            f"[min–max of {idle['window']:g} s windows], peak RSS of the supervisor process "
            "(razard; the user manager; supervisord). Probes: TCP every "
            f"{idle['probe_interval']:g} s.",
            "",
            "| components | razard (probes off) | razard + TCP probes | systemd native "
            "| supervisord |",
            "|---|---|---|---|---|",
        ]
        for size, per in idle["sizes"].items():
            row = [size]
            for label in IDLE:
                m = per.get(label)
                if not m:
                    row.append("–")
                    continue
                w = m["cpu_pct_windows"]
                row.append(
                    f"**{fmt(m['cpu_pct'], 2)}%** ({fmt(m['cpu_s'], 2)} s) "
                    f"[{fmt(w['min'], 2)}–{fmt(w['max'], 2)}], {fmt(m['peak_rss_mib'])} MiB"
                )
            lines.append("| " + " | ".join(row) + " |")
        floor = idle.get("razard_import", {})
        if "daemon_mib" in floor:
            lines += [
                "",
                f"razard's floor, no component: a Python importing its daemon peaks at "
                f"{fmt(floor['daemon_mib'])} MiB ({floor['modules']} modules), of which "
                f"asyncio, dbus-fast and prometheus-client alone take {fmt(floor['libs_mib'])} "
                "MiB.",
            ]
        ctl = idle.get("ctl_status", {})
        if "median_ms" in ctl:
            lines += [
                "",
                f"`razarctl status` against razard at {ctl['comps']} components (probes off), "
                f"start to exit over {len(ctl['samples'])} runs: **{fmt(ctl['median_ms'])} ms** "
                f"[{fmt(ctl['min_ms'])}–{fmt(ctl['max_ms'])}], CPU (user + system) "
                f"{fmt(ctl['cpu_median_ms'])} ms, {ctl['imports']} modules imported.",
            ]
    scr = sc.get("scrape", {})
    if scr.get("systems"):
        lines += [
            "",
            f"5. razard `GET /metrics` at {scr['comps']} components, ms (connect to last byte; "
            "systemd and supervisord export no metrics)",
            "",
            "| razard config | latency ms | bytes |",
            "|---|---|---|",
        ]
        for label, s in scr["systems"].items():
            lines.append(f"| {label} | {cell(s, 1, True)} | {s.get('bytes', '–')} |")
    nt = sc.get("notifier", {})
    lines += ["", "6. Escalation notifier reading the journal", ""]
    if "not_run" in nt:
        lines.append(f"Not run: {nt['not_run']}.")
    elif nt:
        lines += [
            "| reader | entries | lines/s | vs ceiling |",
            "|---|---|---|---|",
            f"| notifier (JournalSource, OwnEntries, classify, signature, Grouper) | "
            f"{nt['entries']} | {cell(nt.get('notifier'), 0)} | "
            f"{xratio(nt['notifier_lps'], nt['journalctl_lps'])} |",
            f"| `journalctl -o json > /dev/null` (ceiling) | {nt['entries']} | "
            f"{cell(nt.get('journalctl'), 0)} | 1.00x |",
            f"| `journalctl {nt.get('export_args', '-o export')} > /dev/null` (the notifier's "
            f"journalctl alone, for reference) | {nt['entries']} | "
            f"{cell(nt.get('journalctl_export'), 0)} | "
            f"{xratio(_med(nt, 'journalctl_export'), nt['journalctl_lps'])} |",
        ]
    lines += ["", "## Targets", "", "| target | figure | met |", "|---|---|---|"]
    for t in res["targets"]:
        met = {True: "met", False: "**not met**", None: "no figure"}[t["met"]]
        lines.append(f"| {t['target']} | {t['figure']} | {met} |")
    errs = {k: v["errors"] for k, v in sc.items() if isinstance(v, dict) and v.get("errors")}
    if errs:
        lines += ["", "## Errors", ""]
        for k, e in errs.items():
            for who, msg in e.items():
                lines.append(f"- {k} / {who}: {msg}")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = res["scenarios"].get("recovery", {}).get("systems", {})
    st = res["scenarios"].get("storm", {}).get("systems", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    for ax, block, title, unit in (
        (axes[0], rec, "Recovery after SIGKILL of one component", "ms"),
        (axes[1], st, "Crash storm: all ready again", "s"),
    ):
        names = [n for n in SYS if block.get(n, {}).get("samples")]
        data = [block[n]["samples"] for n in names]
        if data:
            ax.boxplot(data, showfliers=False)
            ax.set_xticks(range(1, len(names) + 1), names)
            for i, d in enumerate(data, start=1):
                xs = [i + (j % 7 - 3) * 0.03 for j in range(len(d))]
                ax.scatter(xs, d, s=8, alpha=0.5)
        ax.set_title(title, fontsize=10)
        if unit == "ms":  # supervisord's ~1 s would flatten the other two
            ax.set_yscale("log")
            ax.set_ylabel("ms (log scale)")
        else:
            ax.set_ylabel(unit)
            ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    res["targets"] = targets(res)
    doc = json.dumps(_clean(res), indent=1, default=str, allow_nan=False)
    (out / "results.json").write_text(doc + "\n")
    (out / "results.md").write_text(markdown(res))
    plot(res, out / "recovery.png")


def _clean(o: Any) -> Any:
    """NaN (no figure) becomes null: results.json is strict JSON."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o
