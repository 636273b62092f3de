"""The `edge-agent bench` subcommand (kept here so agent/cli.py only wires it in)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark the agent against a naive agent and the raw interpreter",
        description="Starts its own mosquitto, agent and load generator; prints a markdown "
        "table and writes bench.json, bench.md and PNG plots (docs/performance.md).",
    )
    p.add_argument("--quick", action="store_true", help="short runs (under 3 minutes)")
    p.add_argument("--smoke", action="store_true", help="tiny runs that only check the machinery")
    p.add_argument("--cpus", type=int, help="pin everything to the first N CPUs")
    p.add_argument("--out", default="bench-results", help="output directory")
    p.add_argument("--models", default="models", help="models directory (manifest.json)")
    p.add_argument("--task", action="append", help="benchmark only this task (repeatable)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-camera", action="store_true", help="skip the camera path benchmark")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench.report import finish
    from agent.bench.runner import Options, run

    if args.cpus is not None and args.cpus < 1:
        print("edge-agent bench: --cpus must be at least 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    opts = Options(
        quick=args.quick,
        smoke=args.smoke,
        cpus=args.cpus,
        out_dir=out,
        models_dir=Path(args.models),
        tasks=args.task,
        plots=not args.no_plots,
        camera=not args.no_camera,
    )
    report = run(opts)
    print(finish(report, out, opts.plots))
    print(
        f"written: {out / 'bench.json'}, {out / 'bench.md'}"
        + (f", {', '.join(report['plots'])}" if report.get("plots") else "")
    )
    return 0
