"""The `edge-agent` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from agent import __version__
from agent.bench.cli import add_parser as add_bench_parser
from agent.config import Config, check_files, load_config
from agent.errors import ConfigError, EdgeAgentError, ModelLoadError

log = logging.getLogger("agent")

DEFAULT_CONFIG = "deploy/agent.yaml"


def _config_path(value: str | None) -> Path | None:
    if value:
        return Path(value)
    env = os.environ.get("EDGE_AGENT_CONFIG")
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG) if Path(DEFAULT_CONFIG).is_file() else None


def _setup_logging(level: str) -> None:
    from agent.service.logsetup import setup_logging

    setup_logging(level)


def _register_secrets(config: Config) -> None:
    from agent.service.logsetup import register_secret

    for secret in (config.mqtt.password(), config.cloud.token()):
        if secret is not None and secret.get_secret_value():
            register_secret(secret.get_secret_value())


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args.config))
    _setup_logging(args.log_level or config.log_level)
    _register_secrets(config)
    problems = check_files(config)
    if problems:
        raise ConfigError(problems)
    from agent.app import Agent

    index = args.serving_process
    log.info(
        "edge-agent %s starting as %s%s",
        __version__,
        config.id,
        f" (serving process {index})" if index else "",
    )
    agent = Agent(config, config_path=_config_path(args.config), process_index=index)
    return agent.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    problems = check_files(config)
    if not problems:
        from agent.app import build_tasks, load_worker_models
        from agent.registry import Registry

        try:
            registry = Registry(config.models.dir)
            tasks = build_tasks(config, registry)
            load_worker_models(
                config.model_copy(
                    update={"workers": config.workers.model_copy(update={"count": 1})}
                ),
                tasks,
            )
        except ModelLoadError as exc:
            problems.append(f"models: {exc}")
        from agent.vision.service import camera_runtimes

        for name, camera in config.cameras.items():
            try:
                camera_runtimes(config, Registry(config.models.dir), camera)
            except ModelLoadError as exc:
                problems.append(f"cameras.{name}: {exc}")
    if problems:
        print(ConfigError(problems), file=sys.stderr)
        return 1
    print(f"{path or '<defaults>'}: OK (id={config.id}, tasks={sorted(config.tasks)})")
    return 0


def cmd_cloud(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level or "INFO")
    from agent.cloud.server import serve

    models_dir = Path(args.models) if args.models else None
    if models_dir is None:
        models_dir = load_config(_config_path(args.config)).models.dir
    serve(
        models_dir,
        args.host,
        args.port,
        instances=args.instances,
        log_level=args.log_level or "info",
        record=Path(args.record) if args.record else None,
        vision_dirs=[Path(d) for d in args.vision_dir],
    )
    return 0


def _models_dir(args: argparse.Namespace) -> Path:
    if args.models:
        return Path(args.models)
    return load_config(_config_path(args.config)).models.dir


def cmd_models_list(args: argparse.Namespace) -> int:
    from agent.registry import Registry

    registry = Registry(_models_dir(args))
    if args.json:
        print(json.dumps(registry.manifest.model_dump(mode="json"), indent=2))
        return 0
    print(f"{'model':<24} {'task':<10} {'role':<10} {'version':<8} {'size':>9}  file")
    for name, entry in registry.manifest.models.items():
        path = registry.directory / entry.file
        size = f"{path.stat().st_size / 1024:.1f} KB" if path.is_file() else "missing"
        row = f"{name:<24} {entry.task:<10} {entry.role:<10} {entry.version:<8} {size:>9}"
        print(f"{row}  {entry.file}")
    for task, t in registry.manifest.tasks.items():
        print(f"task {task}: threshold {t.threshold:.3f}, labels {', '.join(t.labels)}")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from agent.models_pull import pull
    from agent.vision.catalog import CATALOG

    if args.list or not args.names:
        for name, model in CATALOG.items():
            print(f"{name:<20} {model.task:<9} {model.file.file}  {model.description}")
        return 0 if args.list else 2
    if args.url and len(args.names) != 1:
        print("edge-agent: --url names one file: pull one model at a time", file=sys.stderr)
        return 2
    dest = _models_dir(args)
    for name in args.names:
        for item in pull(name, dest, base_url=args.base_url, url=args.url, force=args.force):
            how = "already present" if item.url is None else f"from {item.url}"
            print(f"ok    {item.path} ({item.size} bytes, sha256 checked) {how}")
    return 0


def cmd_models_verify(args: argparse.Namespace) -> int:
    from agent.registry import Registry

    registry = Registry(_models_dir(args))
    bad = 0
    for name, path, problem in registry.verify_all():
        if problem is None:
            print(f"ok    {name:<24} {path}")
        else:
            bad += 1
            print(f"FAIL  {name:<24} {path}: {problem}")
    print(f"{bad} problem(s)" if bad else "all models verified")
    return 1 if bad else 0


def cmd_models_eval(args: argparse.Namespace) -> int:
    from agent.evaluation import evaluate, format_table, write_plot

    ev = evaluate(_models_dir(args), args.task)
    if args.json:
        print(json.dumps(ev.as_dict(), indent=2))
    else:
        print(format_table(ev))
    plot = Path(args.plot or f"cascade_{args.task}.png")
    write_plot(ev, plot)
    print(f"plot: {plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from agent.config_doc import reference_markdown

    print(reference_markdown(), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(count=args.count)


def cmd_simulate(args: argparse.Namespace) -> int:
    from agent.simulate import Options, run

    config = load_config(_config_path(args.config))
    _setup_logging(args.log_level or "WARNING")
    options = Options(
        window_s=args.window_s,
        event_interval_s=args.event_interval,
        speed=args.speed,
        count=args.count,
        devices=tuple(args.device),
        seed=args.seed,
    )
    try:
        sent = run(config, options)
    except KeyboardInterrupt:
        return 130
    print(f"simulate: {sent} messages published")
    return 0


def _add_simulate(
    p: argparse.ArgumentParser, with_config: Callable[[argparse.ArgumentParser], None]
) -> None:
    with_config(p)
    p.add_argument(
        "--window-s", type=float, default=10.0, help="seconds for a device to fill one window"
    )
    p.add_argument(
        "--event-interval", type=float, default=2.0, help="seconds between tablet/climate messages"
    )
    p.add_argument("--speed", type=float, help="one time factor for every device instead")
    p.add_argument("--count", type=int, help="windows (or messages) per device, then stop")
    p.add_argument(
        "--device", action="append", default=[], help="simulate only this device (repeatable)"
    )
    p.add_argument("--seed", type=int, default=0, help="order of the replayed recordings")
    p.set_defaults(func=cmd_simulate)


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 (one flat list of commands)
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c", "--config", help=f"config file (default $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG})"
        )
        p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    p = sub.add_parser("run", help="run the agent")
    with_config(p)
    # internal: an extra serving process started by the agent (workers.processes)
    p.add_argument("--serving-process", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and the models it names")
    with_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("cloud", help="serve the cloud models over the Open Inference Protocol")
    with_config(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--models", help="models directory (default: the config's models.dir)")
    p.add_argument("--instances", type=int, default=2, help="interpreters per model")
    p.add_argument(
        "--vision-dir",
        action="append",
        default=[],
        help="also serve the pretrained vision models found here (repeatable)",
    )
    p.add_argument("--record", help="append every inference request body to this file")
    p.set_defaults(func=cmd_cloud)

    p = sub.add_parser("config-reference", help="print every config key as markdown")
    p.set_defaults(func=cmd_config_reference)

    add_bench_parser(sub)

    p = sub.add_parser("demo", help="run broker, cloud and agent here and show answers")
    p.add_argument("--count", type=int, default=12, help="requests per round")
    p.set_defaults(func=cmd_demo)

    _add_simulate(
        sub.add_parser(
            "simulate",
            help="publish the config's devices in their real formats, replaying real data",
        ),
        with_config,
    )

    models = sub.add_parser("models", help="the model registry").add_subparsers(
        dest="models_command", required=True
    )
    for name, func, helptext in (
        ("list", cmd_models_list, "list the models in the manifest"),
        ("verify", cmd_models_verify, "check every model file against its sha256"),
    ):
        p = models.add_parser(name, help=helptext)
        with_config(p)
        p.add_argument("--models", help="models directory (default: the config's models.dir)")
        if name == "list":
            p.add_argument("--json", action="store_true", help="print the manifest as JSON")
        p.set_defaults(func=func)
    p = models.add_parser("pull", help="fetch a pretrained vision model, checking its sha256")
    with_config(p)
    p.add_argument("names", nargs="*", metavar="NAME", help="catalog model name(s)")
    p.add_argument("--models", help="models directory (default: the config's models.dir)")
    p.add_argument("--list", action="store_true", help="list the models that can be pulled")
    p.add_argument("--base-url", help="a mirror of the published files (file names appended)")
    p.add_argument("--url", help="the exact URL of the model file (one NAME)")
    p.add_argument("--force", action="store_true", help="fetch even if present and valid")
    p.set_defaults(func=cmd_models_pull)
    p = models.add_parser("eval", help="edge, cloud and cascade accuracy on a test split")
    with_config(p)
    p.add_argument("task", help="task name, e.g. digits")
    p.add_argument("--models", help="models directory (default: the config's models.dir)")
    p.add_argument("--plot", help="PNG to write (default cascade_<task>.png)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_models_eval)
    return parser


# sysexits.h EX_CONFIG: the unit's RestartPreventExitStatus=78 keeps systemd from restarting
# an agent that cannot work until a person fixes its config, credentials or models.
EX_CONFIG = 78


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = args.command == "run"
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG if run else 1
    except EdgeAgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EX_CONFIG if run else 1
    except KeyboardInterrupt:
        return 130
