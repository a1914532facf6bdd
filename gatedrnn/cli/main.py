"""The command line: ``gatedrnn <command>`` (also ``python -m gatedrnn``) and the root scripts.

Every command's arguments are parsed here and nowhere else; each command then calls the
package with plain objects (:class:`TrainSettings`, :class:`WorkerOptions`, paths). The root
scripts are this module with one command fixed:

    init_experiments.py        = gatedrnn init
    training_01_all.py         = gatedrnn train
    examine_results_01_all.py  = gatedrnn examine

Exit statuses: 0 success; 1 the sweep finished with failed configurations; 2 bad input (one line
on stderr naming the file, key or value); 3 stopped with work left.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..spec.config import INPUT_INITS, TrainSettings
from .common import _error, _finite_float, _Parser
from .views import (_export_arguments, _inspect_arguments, _prune_arguments, _run_export, _run_inspect, _run_prune,
                    _run_sample, _run_status, _sample_arguments, _status_arguments)

__all__ = ["main", "build_parser", "train_options"]

# ---------------------------------------------------------------------------- init
def _task_key(text: str) -> tuple[str, list[int]]:
    """argparse type: ``KEY=V[,V...]``, whole numbers."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=V[,V...], got {text!r}")
    try:
        return key, [int(v) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: values must be whole numbers, got {values!r}") from None


def _init_arguments(p: argparse.ArgumentParser) -> None:
    from ..spec.grid import DEFAULT_LAYERS, DEFAULT_STATE_SIZES

    p.add_argument("--config-file", default="rnn_configs.json", help="configuration list to create or extend (%(default)s)")
    p.add_argument("--results-dir", default="results_01_all", help="results folder to create (%(default)s)")
    p.add_argument("--state-sizes", type=int, nargs="+", default=list(DEFAULT_STATE_SIZES), metavar="N",
                   help="state sizes (%(default)s)")
    p.add_argument("--layers", type=int, nargs="+", default=list(DEFAULT_LAYERS), metavar="N", help="depths (%(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                   help="give each configuration a seed key, one entry per seed (overrides training's --seed)")
    p.add_argument("--lrs", type=_finite_float, nargs="+", default=None, metavar="LR",
                   help="give each configuration an lr key, one entry per rate (a swept learning rate: it overrides "
                        "training's --lr, and examine compares each configuration at its best rate)")
    p.add_argument("--input-inits", nargs="+", choices=INPUT_INITS, default=None, metavar="INIT",
                   help="give each configuration an input_init key, one entry per value: linear (the original "
                        "study's nn.Linear(256, d) input map) and/or normal (an N(0, 1) embedding without a bias); "
                        "it overrides training's --input-init")
    p.add_argument("--cells", nargs="+", default=["gated"], metavar="CELL",
                   help="cell kinds: gated gru lstm rnn esn esgp (%(default)s); esn enters with both readouts")
    p.add_argument("--bptt", type=int, nargs="+", default=[1], metavar="K",
                   help="truncation: 1 = detach every step (default), K > 1 = BPTT over K steps")
    p.add_argument("--tasks", nargs="+", default=["bytes"], metavar="TASK",
                   help="what is learned: bytes (next-byte prediction, the default) and the memory tasks copy "
                        "adding delayed mackey-glass digits smnist (your MNIST, --data); crossed with every other swept key")
    p.add_argument("--task-keys", nargs="+", default=[], metavar="KEY=V[,V...]", type=_task_key,
                   help="values of the tasks' own keys, crossed: length=50,100 (copy: blanks T; adding, delayed, "
                        "mackey-glass: steps), delay=5 (delayed), symbols=8 (delayed), horizon=1 (mackey-glass), "
                        "permute=0,1 (smnist)")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--refine-from", default=None, metavar="DIR",
                       help="instead of the grid: the best --top fraction of the configurations in DIR, "
                            "with state size 512 and at least 3 layers")
    stage.add_argument("--replicate-from", default=None, metavar="DIR",
                       help="instead of the grid: the --top best configurations in DIR by mean val loss, each once "
                            "per seed: --seeds, or by default the --replicates smallest seeds no run in DIR used "
                            "(the original study's third stage, on fresh seeds)")
    p.add_argument("--top", type=_finite_float, default=None,
                   help="--refine-from: the fraction kept (0.1); --replicate-from: how many configurations (10)")
    p.add_argument("--replicates", type=int, default=5,
                   help="--replicate-from without --seeds: how many fresh seeds (%(default)s)")
    p.add_argument("--allow-seed-reuse", action="store_true",
                   help="--replicate-from: accept --seeds that the selecting stage used (its estimate is then "
                        "biased by the selection)")


def _run_init(args: argparse.Namespace) -> int:
    from ..spec.grid import ConfigFileError, default_grid, merge_configs

    try:
        for name in ("state_sizes", "layers"):
            for v in getattr(args, name):
                if v < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if args.seeds is not None and any(s < 0 for s in args.seeds):
            raise ValueError(f"--seeds must be >= 0, got {args.seeds}")
        if args.lrs is not None and any(not lr > 0 for lr in args.lrs):
            raise ValueError(f"--lrs must be positive, got {' '.join(f'{lr:g}' for lr in args.lrs)}")
        source = args.refine_from or args.replicate_from
        if source is not None:
            from ..analysis.stages import next_stage

            configs, stage, n, metric = next_stage(source, args.refine_from is not None, args.top, args.seeds,
                                                   args.replicates, args.allow_seed_reuse)
            print(f"{source}: ranked {n} configurations by mean {metric}")
        else:
            if any(k < 1 for k in args.bptt):
                raise ValueError(f"--bptt must be >= 1, got {args.bptt}")
            configs = default_grid(args.state_sizes, args.layers, args.seeds, args.cells, args.bptt,
                                   args.tasks, dict(args.task_keys), lrs=args.lrs,
                                   input_inits=args.input_inits)
        results = Path(args.results_dir)
        if results.exists() and not results.is_dir():
            raise ValueError(f"{results}: exists and is not a folder")
        added, total = merge_configs(args.config_file, configs)
        results.mkdir(parents=True, exist_ok=True)
        if args.replicate_from is not None:
            from ..store.folder import ResultsFolder

            ResultsFolder(results).write_stage(stage)
            print(f"{results}: seeds {' '.join(map(str, stage['seeds']))} "
                  + ("(none used by the selecting stage)" if not stage["reused"] else
                     f"(reusing {' '.join(map(str, stage['reused']))} of the selecting stage, as allowed)"))
    except (ValueError, ConfigFileError, OSError) as e:
        return _error(e)
    print(f"{args.config_file}: {total} configurations ({added} new); results go to {results}/")
    return 0


# ---------------------------------------------------------------------------- train
# the settings a results folder records (gatedrnn.store.folder.RECORDED_SETTINGS, and the corpus): a
# launcher given none of them takes the folder's (a rerun remembers); an explicit other value is
# refused as before
_REMEMBERED = ("steps", "batch_size", "history", "lr", "log_every", "eval_every", "seed", "val_streams", "data",
               "split", "input_init", "halving", "rungs", "halving_rule", "audit")


def _training_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainSettings()
    g = p.add_argument_group("training settings (default: the results folder's recorded values, where it has them)")
    g.add_argument("--steps", type=int, default=None, help=f"optimizer steps (= bytes per stream) per run ({d.steps})")
    g.add_argument("--batch-size", type=int, default=None, help=f"parallel streams ({d.batch_size})")
    g.add_argument("--history", type=int, default=None, help=f"bytes per window before the state resets ({d.history})")
    g.add_argument("--lr", type=_finite_float, default=None, help=f"Adam learning rate ({d.lr})")
    g.add_argument("--input-init", choices=INPUT_INITS, default=None, help="the input map where a configuration has no "
                   f"input_init: linear (the original's nn.Linear(256, d)) or normal (N(0, 1), no bias) ({d.input_init})")
    g.add_argument("--log-every", type=int, default=None, help=f"steps between loss-curve points ({d.log_every})")
    g.add_argument("--eval-every", type=int, default=None,
                   help=f"steps between validations, 0: only at the end ({d.eval_every})")
    g.add_argument("--data", default=None, help="corpus file (plain, .gz, .bz2, .xz, .zip), a built-in corpus "
                   "(builtin:python-docs, the default; builtin:pydoc_topics, the default before issue 39), or for "
                   "smnist your MNIST: a folder of the IDX files, or mnist.npz")
    g.add_argument("--split", choices=("windows", "contiguous"), default=None,
                   help="how the held-out 10 %% divides: windows (matched windows, validation and test exchangeable) "
                        "or contiguous (validation then test, the literature's 90/5/5; the default on enwik8 and "
                        "text8 as shipped) (windows)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (%(default)s)")
    g.add_argument("--seed", type=int, default=None, help=f"training seed; a configuration's own seed key wins ({d.seed})")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints (%(default)s)")
    g.add_argument("--halving", type=int, default=None, metavar="ETA", help="successive halving: all train to the "
                   "first rung, the best 1/ETA continue to the next, and an audit sample of the rest to the end (off)")
    g.add_argument("--rungs", type=int, default=None, metavar="R", help=f"rungs at steps/ETA^(R-1), ..., steps ({d.rungs})")
    g.add_argument("--halving-rule", choices=("top", "protect"), default=None,
                   help="who continues past a rung: top = the best 1/ETA by the mean over seeds; protect = also every "
                        f"one that could be best at the rung (folders before issue 40) ({d.halving_rule})")
    g.add_argument("--audit", type=_finite_float, default=None, metavar="SHARE",
                   help="the share of the configurations stopped at each rung that a seeded random sample continues "
                        f"to the end, to measure what stopping lost (0: none) ({d.audit})")
    g.add_argument("--val-streams", type=int, default=None, help=f"at most this many validation streams ({d.val_streams})")
    q = p.add_argument_group("queue")
    q.add_argument("--config-file", default="rnn_configs.json", help="the configuration list (%(default)s)")
    q.add_argument("--results-dir", default="results_01_all", help="results folder (%(default)s)")
    q.add_argument("--lease-seconds", type=_finite_float, default=120.0,
                   help="a claim without heartbeat for this long is stale (%(default)s)")
    q.add_argument("--lock", choices=("file", "soft"), default=None,
                   help="queue lock: file (flock; local disks; the default) or soft (marker file; NFS, several "
                        "hosts; the default under --slurm)")
    q.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    q.add_argument("--max-runs", type=int, default=None, help="runs per worker, then exit")
    q.add_argument("--pack", type=int, default=None, metavar="K",
                   help="train up to K gated configurations of one group (same n_layers and state_size) as one "
                        "batched step; 1: one at a time (default: whole groups where packing is faster: every "
                        "group on CUDA, states up to 64 on the CPU; split among --workers)")
    q.add_argument("--no-weights", action="store_true",
                   help="do not keep each finished run's final weights (results_01_all/weights/<id>.safetensors)")
    f = p.add_argument_group("failures and faults")
    f.add_argument("--retry-failed", action="store_true",
                   help="train the failed configurations again (each old record kept as <id>.failed-<n>.json)")
    f.add_argument("--continue-stopped", nargs="+", default=None, metavar="ID",
                   help="successive halving: continue configurations stopped at a rung to the full budget, from their "
                        "checkpoints (a run's id as in the results folder, or all); each stopped result is kept as "
                        "<id>.stopped-<n>.json; they never enter the audit's estimates")
    f.add_argument("--retry-delay", type=_finite_float, default=30.0,
                   help="seconds before a configuration that raised is tried again, doubling (%(default)s)")
    f.add_argument("--fault-retries", type=int, default=5,
                   help="a worker waits this many times after faults of the machine (full disk, out of memory, "
                        "device error) before it stops (%(default)s)")
    f.add_argument("--fault-backoff", type=_finite_float, default=10.0,
                   help="the first such wait, in seconds, doubling (%(default)s)")


def _slurm_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Slurm (pip install 'gatedrnn[slurm]')")
    g.add_argument("--slurm", action="store_true", help="submit the workers as one Slurm job array and return")
    g.add_argument("--wait", action="store_true", help="with --slurm: stay and show progress until the array ends")
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs per array task (%(default)s)")
    g.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs per array task; also its torch threads (%(default)s)")
    g.add_argument("--mem-per-worker", type=_finite_float, default=None, metavar="GB", help="memory per array task, in GB")
    g.add_argument("--time-minutes", type=int, default=60, help="time limit of each task; it is requeued past it (%(default)s)")
    g.add_argument("--signal-delay-seconds", type=int, default=90,
                   help="Slurm signals a task this long before its time limit, to checkpoint and requeue (%(default)s)")
    g.add_argument("--slurm-extra", nargs="+", default=[], metavar="KEY=VALUE", help="further sbatch options, e.g. account=abc")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="worker processes to start (%(default)s)")
    _training_arguments(p)
    _slurm_arguments(p)


def _remembered(args: argparse.Namespace) -> dict[str, object]:
    """The results folder's recorded values of the settings not given on the command line (none
    where the folder has no record, or it is damaged: the queue reports and replaces that)."""
    from ..store.folder import ResultsFolder

    from ..data.corpus import folder_data

    record = ResultsFolder(args.results_dir).read_settings()
    if not isinstance(record, dict):
        return {}
    record = {**record, "data": folder_data(record.get("data"), record.get("dataset sha256"))}
    return {k: record[k] for k in _REMEMBERED if getattr(args, k, None) is None and record.get(k) is not None}


def _data_path(data: str) -> str:
    """A corpus file as an absolute path (a built-in corpus's name as it is)."""
    return data if data.startswith("builtin:") else str(Path(data).resolve())


def _literature_split(settings: TrainSettings, remembered: dict[str, object], args: argparse.Namespace):
    """A new folder on enwik8 or text8 as shipped splits as the literature does (``contiguous``),
    said in one line; a folder's recorded rule and an explicit --split win."""
    if settings.data is None or "split" in remembered or getattr(args, "split", None) is not None:
        return settings
    if Path(settings.data).name.split(".")[0] not in ("enwik8", "text8"):
        return settings
    from ..data.corpus import DataError, literature_split, load_corpus

    try:
        rule = literature_split(load_corpus(settings.data))
    except DataError:
        return settings  # the launcher reports an unreadable corpus
    if rule is None:
        return settings
    print(f"{settings.data}: {Path(settings.data).name} as shipped: validation and test are the two contiguous "
          "halves of its last 10 % (the literature's 90/5/5; --split windows for exchangeable splits)", flush=True)
    return settings.replace(split=rule)


def _options(args: argparse.Namespace, remembered: dict[str, object] | None = None):
    from ..running.options import WorkerOptions

    d = TrainSettings()
    given = {k: getattr(args, k) for k in _REMEMBERED if getattr(args, k, None) is not None}
    if "data" in given:
        given["data"] = _data_path(given["data"])
    values = {k: getattr(d, k) for k in _REMEMBERED} | (remembered or {}) | given
    settings = TrainSettings(**values, checkpoint_every=args.checkpoint_every, device=args.device)
    settings = _literature_split(settings, remembered or {}, args)
    lock = args.lock or ("soft" if getattr(args, "slurm", False) else "file")
    return WorkerOptions(config_file=args.config_file, results_dir=args.results_dir, settings=settings,
                         lease_seconds=args.lease_seconds, lock=lock, max_runs=args.max_runs, threads=args.threads,
                         retry_delay=args.retry_delay, fault_retries=args.fault_retries,
                         fault_backoff=args.fault_backoff, keep_weights=not args.no_weights, pack=args.pack)


def train_options(argv: Sequence[str]):
    """The :class:`WorkerOptions` that ``gatedrnn train ARGV`` would give its workers (for tests
    and tools that start a worker by hand)."""
    p = _Parser(prog="gatedrnn train")
    _train_arguments(p)
    return _options(p.parse_args(list(argv)))


def _say_remembered(remembered: dict[str, object], results_dir: str) -> None:
    if remembered:
        shown = ", ".join(f"{k}={v}" for k, v in remembered.items())
        print(f"{results_dir}: continuing with its recorded settings: {shown}", flush=True)


def _run_train(args: argparse.Namespace) -> int:
    from ..spec.grid import read_configs
    from ..store.queue import Queue
    from ..running.launcher import launch, validate
    from ..running.options import BAD_INPUT

    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        remembered = _remembered(args)
        options = _options(args, remembered)
        validate(options)
        _say_remembered(remembered, options.results_dir)
        if args.retry_failed:
            queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
            n = queue.reopen_failed(read_configs(options.config_file))
            print(f"--retry-failed: {n} failed configuration(s) pending again; each old record kept as "
                  "<id>.failed-<n>.json", flush=True)
        if args.continue_stopped:
            _continue_stopped(options, args.continue_stopped, read_configs(options.config_file))
        params = None
        if args.slurm:
            from ..running.slurm import SlurmParams, parse_extra

            params = SlurmParams(partition=args.partition, gpus_per_worker=args.gpus_per_worker,
                                 cpus_per_worker=args.cpus_per_worker, mem_per_worker_gb=args.mem_per_worker,
                                 time_minutes=args.time_minutes, signal_delay_seconds=args.signal_delay_seconds,
                                 extra=parse_extra(args.slurm_extra))
    except BAD_INPUT as e:
        return _error(e)
    if params is not None:
        from ..running.slurm import run_array

        return run_array(options, args.workers, params, wait=args.wait)
    if options.threads is None:
        options.threads = max(1, (os.cpu_count() or 1) // args.workers)
    return launch(options, args.workers)


def _continue_stopped(options, ids: list[str], configs: list[dict]) -> None:
    """--continue-stopped ID...|all (ValueError for an id that names no stopped run)."""
    from ..store.queue import Queue

    if not options.settings.halving:
        raise ValueError(f"--continue-stopped: {options.results_dir} is not a successive-halving sweep (no --halving)")
    every = [i.lower() for i in ids] == ["all"]
    queue = Queue(options.results_dir, lease_seconds=options.lease_seconds, lock=options.lock)
    out = queue.reopen_stopped(configs, None if every else ids)
    if out["not stopped"]:
        raise ValueError(f"--continue-stopped: {out['not stopped'][0]} is not a run stopped at a rung of "
                         f"{options.results_dir} (see gatedrnn status)")
    for cid in out["no checkpoint"]:
        print(f"{cid[:12]}: stopped before stopped runs kept their checkpoints: it trains from the start", flush=True)
    print(f"--continue-stopped: {len(out['continued'])} stopped configuration(s) continue to {options.settings.steps} "
          "steps; each stopped record kept as <id>.stopped-<n>.json", flush=True)


# ---------------------------------------------------------------------------- examine
def _examine_arguments(p: argparse.ArgumentParser) -> None:
    from ..analysis.examine import METRICS

    p.add_argument("--results-dir", default="results_01_all", help="results folder (%(default)s)")
    p.add_argument("--threshold", type=_finite_float, default=1.9, help="loss threshold in nats per byte (%(default)s)")
    p.add_argument("--out", default=".", help="folder for the PNGs and summaries (%(default)s)")
    p.add_argument("--metric", default="auto", choices=("auto", *METRICS),
                   help="what ranks the configurations: auto = val loss where the runs have it, else min loss")
    p.add_argument("--rank-on", choices=("final", "min"), default=None,
                   help="rank by the val loss at the end of training (final: the original's, what auto does) or by "
                        "the minimum of each run's validation curve (min: optimistic, a selection on validation)")
    p.add_argument("--config-file", default=None,
                   help="the sweep's configuration list, for its status (default: the one the training launcher "
                        "recorded for this results folder)")
    p.add_argument("--data", default=None, help="the corpus file, if the results' one has moved (for the n-gram lines)")


def _run_examine(args: argparse.Namespace) -> int:
    from ..analysis.examine import examine
    from ..analysis.results import ResultsError

    from ..analysis.references import RANK_ON

    if args.rank_on is not None and args.metric != "auto":
        return _error(ValueError(f"--rank-on {args.rank_on} and --metric {args.metric!r} both choose the ranking: "
                                 "give one"))
    metric = RANK_ON[args.rank_on] if args.rank_on is not None else args.metric
    try:
        report = examine(args.results_dir, args.out, args.threshold, metric, args.config_file, args.data)
    except (ResultsError, ValueError) as e:
        return _error(e)
    for m in report.messages:
        print(f"note: {m}")
    print(f"status: {report.status_line()}")
    if report.best:
        print(f"ranked by: mean {report.metric} over each configuration's finished runs")
        print(f"best: {report.best_line()}")
        print(report.could_be_best_line())
        if report.noise:
            print(f"seed noise: std {report.noise['seed std']:.4f} within a configuration, "
                  f"{report.noise['between std']:.4f} between configurations")
    if report.best or not report.tasks:
        print(f"runs below {args.threshold:g}: {report.below}")
    if report.halving:
        print(report.halving)
    if report.verdict:
        print(f"halving: {report.verdict}")
    for task, sub in report.tasks.items():
        level = "" if sub.chance is None else f" ({'persistence' if task.startswith('mackey-glass') else 'chance'} {sub.chance:.4f})"
        print(f"task {task}: {sub.configurations} configurations ranked by mean {sub.metric}{level}; "
              f"best: {sub.best_line() or 'none finished'}")
    print("wrote: " + ", ".join(str(p) for p in report.written))
    return 0


# ---------------------------------------------------------------------------- dispatch
# name -> (one-line help, add the arguments, run)
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "init": ("write the grid of configurations (adding only new ones) and create the results folder",
             _init_arguments, _run_init),
    "train": ("train the sweep's configurations with N workers over a file-lock queue; kill and rerun at any time",
              _train_arguments, _run_train),
    "examine": ("plot and summarise a results folder (ours or the original study's)", _examine_arguments, _run_examine),
    "status": ("the sweep's state without training: counts, running and stale claims, failures, ETA",
               _status_arguments, _run_status),
    "inspect": ("what a checkpoint, a weights file or a finished run holds", _inspect_arguments, _run_inspect),
    "sample": ("generate bytes with a finished run's model", _sample_arguments, _run_sample),
    "export": ("export the finished runs to an experiment tracker (MLflow)", _export_arguments, _run_export),
    "prune": ("free the disk that a halving sweep's stopped runs keep (their checkpoints)", _prune_arguments,
              _run_prune),
}


def build_parser(prog: str = "gatedrnn", only: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``only``: give that command its arguments and the others none (they
    are not parsed), so that ``gatedrnn status`` does not import what ``examine`` needs."""
    p = _Parser(prog=prog, description="Sweep the switches of a gated RNN layer trained "
                "without backpropagation through time.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, (summary, add, _) in _COMMANDS.items():
        parser = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        if only is None or name == only:
            add(parser)
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``gatedrnn COMMAND ...``. With ``prog`` (the root scripts), ``argv[0]`` names the command
    and ``prog`` is what usage and help messages call the program."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog is not None and argv and argv[0] in _COMMANDS:
        summary, add, run = _COMMANDS[argv[0]]
        p = _Parser(prog=prog, description=summary[0].upper() + summary[1:] + ".")
        add(p)
        return run(p.parse_args(argv[1:]))
    args = build_parser(prog or "gatedrnn", only=argv[0] if argv and argv[0] in _COMMANDS else None).parse_args(argv)
    return _COMMANDS[args.command][2](args)
