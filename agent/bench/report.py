"""The benchmark report: goals and ratios, a markdown table, PNG plots, and the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

GOAL_TASK = "digits"


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ratio(a: Any, b: Any) -> float | None:
    if not (isinstance(a, int | float) and isinstance(b, int | float) and b):
        return None
    r = a / b
    return round(r, 2) if r >= 0.1 else float(f"{r:.2g}")


def goal_task(report: dict[str, Any]) -> str:
    tasks = list(report["raw"])
    return GOAL_TASK if GOAL_TASK in tasks else tasks[0]


SYSTEMS = ("naive", "naive-lean", "agent")  # table order


def ratios(
    report: dict[str, Any], task: str, baseline: str = "naive"
) -> dict[str, float | None]:
    """Ratios of the agent against `baseline` (`naive`: the tutorial paho loop of the goals;
    `naive-lean`: the same loop on the agent's MQTT client) and against the raw ceiling."""
    agent = _get(report, "systems", "agent", "tasks", task)
    naive = _get(report, "systems", baseline, "tasks", task)
    raw = report["raw"][task]
    a_sat = _get(agent, "saturation", "throughput_rps")
    n_sat = _get(naive, "saturation", "throughput_rps")
    return {
        "saturation_agent_over_naive": _ratio(a_sat, n_sat),
        "saturation_agent_over_raw_batch1": _ratio(a_sat, raw["batch1"]["samples_per_s"]),
        "saturation_agent_over_raw_batched": _ratio(a_sat, raw["batched"]["samples_per_s"]),
        "saturation_naive_over_raw_batch1": _ratio(n_sat, raw["batch1"]["samples_per_s"]),
        "p99_at_1000_agent_over_naive": _ratio(
            _get(agent, "rates", "1000", "latency_ms", "p99"),
            _get(naive, "rates", "1000", "latency_ms", "p99"),
        ),
        "cpu_per_request_agent_over_naive": _ratio(
            _get(agent, "saturation", "cpu_ms_per_request"),
            _get(naive, "saturation", "cpu_ms_per_request"),
        ),
    }


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    task = goal_task(report)
    r = ratios(report, task)
    agent = report["systems"]["agent"]
    p99 = _get(agent, "tasks", task, "rates", "1000", "latency_ms", "p99")
    naive_p99 = _get(
        report, "systems", "naive", "tasks", task, "rates", "1000", "latency_ms", "p99"
    )
    out = [
        {
            "goal": f"saturation on {task} >= 3x the naive agent",
            "measured": f"{r['saturation_agent_over_naive']}x",
            "ok": (r["saturation_agent_over_naive"] or 0) >= 3.0,
        },
        {
            "goal": "p99 at 1,000 req/s <= naive p99 and < 5 ms",
            "measured": f"{p99} ms (naive {naive_p99} ms)",
            "ok": p99 is not None and naive_p99 is not None and p99 <= naive_p99 and p99 < 5.0,
        },
        {
            "goal": "peak RSS <= 150 MB, all benchmarked models loaded",
            "measured": f"{agent['peak_rss_mb']} MB while keeping up; "
            f"{agent.get('peak_rss_overload_mb', 0.0)} MB above capacity",
            "ok": agent["peak_rss_mb"] <= 150.0,
        },
        {
            "goal": "start to READY <= 3 s",
            "measured": f"{agent['ready_s']} s",
            "ok": agent["ready_s"] <= 3.0,
        },
    ]
    runs = {
        (len(s["cpus"]), s["agents"], s.get("processes", 1)): s
        for s in report.get("scaling", [])
    }
    base, two = runs.get((1, 1, 1)), runs.get((2, 1, 2)) or runs.get((2, 1, 1))
    if base and two:
        scale = _ratio(two["throughput_rps"], base["throughput_rps"])
        procs = two.get("processes", 1)
        out.append(
            {
                "goal": "2 CPUs >= 1.6x the 1-CPU throughput",
                "measured": f"{scale}x ({base['throughput_rps']:.0f} -> "
                f"{two['throughput_rps']:.0f} req/s, one agent, workers.processes {procs})",
                "ok": (scale or 0) >= 1.6,
            }
        )
    return out


def _lat(run: dict[str, Any] | None) -> str:
    if not run:
        return "-"
    if run["latency_ms"]["p50"] is None:
        return f"none in time ({run['throughput_rps']:,.0f}/s answered late)"
    lat = run["latency_ms"]
    s = f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['p99']:.2f}"
    if run["throughput_rps"] < 0.9 * run["offered_rps"]:
        s += " (overloaded)"
    return s


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"## edge-agent bench ({report['mode']})",
        "",
        f"{m['cpu_model']}, {len(m['cpus_used'])} of {m['nproc']} CPUs used, Python {m['python']}, "
        f"{m['runtime']}, paho-mqtt {m['paho_mqtt']}; load average {m['loadavg_at_start']} at "
        f"start, {m.get('loadavg_at_end')} at end; {report['elapsed_s']} s.",
        f"One load generator process offers {report['generator_offer_rps']:,.0f} req/s.",
        "",
    ]
    rates = [str(r) for r in report["plan"]["fixed_rates"]]
    head = "| task | system | saturation req/s | CPU ms/req | " + " | ".join(
        f"p50 / p95 / p99 ms @ {int(r):,}/s" for r in rates
    )
    lines += [
        head + " | READY s | peak RSS MB (above capacity) |",
        "|" + "---|" * (6 + len(rates)),
    ]
    for task, raw in report["raw"].items():
        lines.append(
            f"| {task} | raw interpreter (ceiling) | "
            f"{raw['batch1']['samples_per_s']:,.0f} (batch 1), "
            f"{raw['batched']['samples_per_s']:,.0f} (batch {raw['batched']['batch']}) | - | "
            + " | ".join("-" for _ in rates)
            + " | - | - |"
        )
        for kind in SYSTEMS:
            sysrep = report["systems"].get(kind)
            if sysrep is None:
                continue
            t = sysrep["tasks"].get(task)
            if t is None:
                continue
            sat = t["saturation"]
            lines.append(
                f"| {task} | {kind} | {sat['throughput_rps']:,.0f} | "
                f"{sat.get('cpu_ms_per_request', '-')} | "
                + " | ".join(_lat(t["rates"].get(r)) for r in rates)
                + f" | {sysrep['ready_s']} | {sysrep['peak_rss_mb']} "
                f"({sysrep.get('peak_rss_overload_mb', '-')}) |"
            )
    lines.append("")
    for task in report["raw"]:
        r = ratios(report, task)
        lines.append(
            f"Ratios on {task}: agent/naive saturation **{r['saturation_agent_over_naive']}x**; "
            f"agent/raw ceiling {r['saturation_agent_over_raw_batch1']}x (batch 1), "
            f"{r['saturation_agent_over_raw_batched']}x (batched); naive/raw "
            f"{r['saturation_naive_over_raw_batch1']}x; p99 @1,000/s agent/naive "
            f"{r['p99_at_1000_agent_over_naive']}x; CPU per request agent/naive "
            f"{r['cpu_per_request_agent_over_naive']}x."
        )
        if "naive-lean" in report["systems"]:
            lean = ratios(report, task, "naive-lean")
            lines.append(
                f"Against naive-lean on {task}: saturation "
                f"**{lean['saturation_agent_over_naive']}x**; p99 @1,000/s "
                f"{lean['p99_at_1000_agent_over_naive']}x; CPU per request "
                f"{lean['cpu_per_request_agent_over_naive']}x."
            )
    if report.get("scaling"):
        lines += [
            "",
            f"Scaling: the agent's saturation on `{report.get('scaling_task', '?')}` (CPU "
            "ms/req and cores busy count all of an agent's serving processes; with 2 agents, "
            "the first agent's, which answered about half):",
            "",
            "| agents | serving processes | CPUs | saturation req/s | CPU ms/req | "
            "cores busy (agent 0) |",
            "|---|---|---|---|---|---|",
        ]
        for s in report["scaling"]:
            lines.append(
                f"| {s['agents']} | {s.get('processes', 1)} | {len(s['cpus'])} | "
                f"{s['throughput_rps']:,.0f} | "
                f"{s.get('cpu_ms_per_request', '-')} | {s.get('cpu_cores_busy', '-')} |"
            )
    lines += ["", "| goal | measured | met |", "|---|---|---|"]
    for g in report["goals"]:
        lines.append(f"| {g['goal']} | {g['measured']} | {'yes' if g['ok'] else 'NO'} |")
    cam = report.get("camera", {})
    lines.append("")
    if "skipped" in cam:
        lines.append(f"Camera path: skipped ({cam['skipped']}).")
    elif cam:
        runs = ", ".join(
            f"{k.replace('_', ' ')} {cam[k]['fps']} frames/s"
            for k in ("no_gating", "gating_static_scene", "gating_moving_scene")
            if k in cam
        )
        lines.append(
            f"Camera path ({cam.get('task')}, {cam.get('model')}, {cam.get('width')}x"
            f"{cam.get('height')} JPEG): {runs}."
        )
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["raw"])
    colors = {"naive": "tab:orange", "naive-lean": "tab:green", "agent": "tab:blue"}
    paths = []
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        top = 0.0
        for kind in [k for k in SYSTEMS if k in report["systems"]]:
            t = report["systems"][kind]["tasks"].get(task)
            if not t:
                continue
            pts = sorted((r["offered_rps"], r["throughput_rps"]) for r in t["rates"].values())
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", color=colors[kind], label=f"{kind} (open loop)")
            sat = t["saturation"]["throughput_rps"]
            ax.axhline(
                sat, color=colors[kind], ls="--", lw=1, label=f"{kind} saturation {sat:,.0f}/s"
            )
            top = max(top, *xs)
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":", label="answered = offered")
        raw = report["raw"][task]["batch1"]["samples_per_s"]
        ax.set_title(
            f"{task}: throughput vs offered load\n(raw interpreter ceiling: {raw:,.0f}/s batch 1)"
        )
        ax.set_xlabel("offered requests/s")
        ax.set_ylabel("answered requests/s")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for kind in [k for k in SYSTEMS if k in report["systems"]]:
            t = report["systems"][kind]["tasks"].get(task)
            if not t:
                continue
            for rate, style in (("100", ":"), ("1000", "-"), ("5000", "--")):
                cdf = _get(t, "rates", rate, "cdf_ms")
                if cdf:
                    qs = [i / (len(cdf) - 1) for i in range(len(cdf))]
                    ax.plot(cdf, qs, style, color=colors[kind], label=f"{kind} @ {int(rate):,}/s")
        ax.set_xscale("log")
        ax.axvline(5.0, color="red", lw=0.8, label="5 ms")
        ax.set_title(f"{task}: latency CDF at fixed offered loads")
        ax.set_xlabel("latency ms (request sent -> answer received)")
        ax.set_ylabel("fraction of requests")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths.append(out_dir / "latency_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def finish(report: dict[str, Any], out_dir: Path, with_plots: bool) -> str:
    """Add goals and ratios, write bench.json, bench.md and the plots; return the markdown."""
    report["ratios"] = {task: ratios(report, task) for task in report["raw"]}
    if "naive-lean" in report["systems"]:
        report["ratios_naive_lean"] = {
            task: ratios(report, task, "naive-lean") for task in report["raw"]
        }
    report["goals"] = goals(report)
    if with_plots:
        try:
            report["plots"] = [str(p) for p in plots(report, out_dir)]
        except ImportError:
            report["plots"] = []
            report["plots_skipped"] = "matplotlib is not installed: pip install 'edge-agent[bench]'"
    text = markdown(report)
    (out_dir / "bench.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out_dir / "bench.md").write_text(text, encoding="utf-8")
    return text
