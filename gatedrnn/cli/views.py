"""The commands that look at a sweep without training: ``status``, ``inspect``, ``sample`` and
``export``, their arguments and how each runs (:mod:`gatedrnn.cli.tools`,
:mod:`gatedrnn.cli.export`)."""

from __future__ import annotations

import argparse
import sys
import time

from .common import _error, _finite_float

# ---------------------------------------------------------------------------- status, inspect, sample
def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default="results_01_all", help="results folder (%(default)s)")
    p.add_argument("--config-file", default=None,
                   help="the sweep's configuration list (default: the one recorded for the results folder)")
    p.add_argument("--lease-seconds", type=_finite_float, default=120.0, help="the sweep's claim lease (%(default)s)")
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    p.add_argument("--watch", type=_finite_float, default=0.0, metavar="SECONDS",
                   help="look twice, SECONDS apart: another host's claims are judged by their heartbeat changing (0)")


def _labels(report: dict) -> dict[str, str]:
    """The short labels of the configurations the report lists (running, stale, failed): only
    those, so that a sweep of 100,000 configurations is not labelled whole."""
    from ..spec.grid import read_configs
    from ..store.status import labels_of

    shown = {r["id"] for key in ("running", "stale", "failed") for r in report.get(key) or []}
    return labels_of(c for c in read_configs(report["config file"]) if c["id"] in shown)


def _run_status(args: argparse.Namespace) -> int:
    import json

    from .tools import ToolError, format_sweep_report, sweep_report

    try:
        report = sweep_report(args.results_dir, args.config_file, args.lease_seconds, args.watch)
    except ToolError as e:
        return _error(e)
    print(json.dumps(report, indent=1) if args.json else format_sweep_report(report, _labels(report)))
    return 3 if report["work left"] else 0


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="PATH-or-ID", help="a checkpoint or weights file, or a run's id (or a unique prefix)")
    p.add_argument("--results-dir", default="results_01_all", help="where an id is looked up (%(default)s)")
    p.add_argument("--json", action="store_true", help="print it as JSON")


def _run_inspect(args: argparse.Namespace) -> int:
    import json

    from .tools import ToolError, format_inspect, inspect

    try:
        report = inspect(args.target, args.results_dir)
    except ToolError as e:
        return _error(e)
    print(json.dumps(report, indent=1, default=str) if args.json else format_inspect(report))
    return 0


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="a finished run's id (or a unique prefix)")
    p.add_argument("--results-dir", default="results_01_all", help="where the id is looked up (%(default)s)")
    p.add_argument("--prompt", default="", help="text the model reads first (its state warms on it)")
    p.add_argument("--bytes", type=int, default=200, help="bytes to generate (%(default)s)")
    p.add_argument("--temperature", type=_finite_float, default=1.0, help="softmax temperature (%(default)s)")
    p.add_argument("--top-k", type=int, default=None, help="draw among the K likeliest bytes only")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text (%(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:K or auto (%(default)s)")


def _run_sample(args: argparse.Namespace) -> int:
    from .tools import ToolError, sample

    try:
        out = sample(args.id, args.results_dir, args.prompt, args.bytes, args.temperature, args.top_k, args.seed,
                     args.device)
    except ToolError as e:
        return _error(e)
    sys.stdout.write(args.prompt + out.decode("utf-8", errors="replace") + "\n")
    return 0


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=("mlflow",), help="where to export (mlflow)")
    p.add_argument("--results-dir", default="results_01_all", help="results folder (%(default)s)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI: a server (http://host:port), sqlite:///path/mlflow.db, ... (default: "
                        "a local store beside the results folder, <results>.mlflow/)")
    p.add_argument("--experiment", default="gatedrnn", help="MLflow experiment name (%(default)s)")
    p.add_argument("--artifact-location", default=None,
                   help="where a new experiment keeps its artifacts (default: beside a local store; a server's own)")
    p.add_argument("--weights", action="store_true", help="also log each run's weights file as an artifact")
    p.add_argument("--follow", action="store_true",
                   help="keep the store in step with the running sweep (running runs with their curve so far) "
                        "until nothing is left to train, or Ctrl-C")
    p.add_argument("--every", type=_finite_float, default=10.0, help="with --follow: seconds between syncs (%(default)s)")
    p.add_argument("--config-file", default=None,
                   help="with --follow: the sweep's configuration list (default: the one its launcher recorded)")


def _run_export(args: argparse.Namespace) -> int:
    from .export import export_mlflow
    from .tools import ToolError

    def say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    try:
        r = export_mlflow(args.results_dir, args.tracking_uri, args.experiment, args.weights,
                          artifact_location=args.artifact_location, follow=args.follow, every=args.every,
                          config_file=args.config_file, say=say)
    except ToolError as e:
        return _error(e)
    if r["stopped"]:
        print("stopped following; rerun the same command to continue where it stopped")
    print(f"{r['runs']} runs to MLflow experiment {r['experiment']!r} at {r['tracking uri']}: "
          f"{r['created']} created, {r['updated']} updated, {r['runs'] - r['created'] - r['updated']} up to date")
    print(f"see them with: {r['ui']}   (the UI needs the full package: pip install mlflow)")
    return 0




# ---------------------------------------------------------------------------- prune
def _prune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default="results_01_all", help="results folder (%(default)s)")
    p.add_argument("--stopped", action="store_true", required=True,
                   help="remove the checkpoints kept for runs stopped (paused) at a rung of successive halving: they "
                        "can then only be continued from the start")
    p.add_argument("--lock", choices=("file", "soft"), default="file", help="the sweep's queue lock (%(default)s)")


def _run_prune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..store.queue import Queue

    if not Path(args.results_dir).is_dir():
        return _error(f"{args.results_dir}: no such results folder")
    files, freed = Queue(args.results_dir, lock=args.lock).prune_stopped()
    print(f"{args.results_dir}: removed {files} checkpoint(s) of stopped runs, freeing {freed / 1e6:.1f} MB")
    return 0
