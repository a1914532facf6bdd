"""Argument parsing for the repository's scripts (the scripts themselves hold no logic)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["init_main"]


def init_main(argv: Sequence[str] | None = None) -> int:
    from .grid import DEFAULT_LAYERS, DEFAULT_STATE_SIZES, ConfigFileError, default_grid, merge_configs, refine

    p = argparse.ArgumentParser(
        prog="init_experiments.py",
        description="Write the grid of configurations (adding only new ones) and create the results folder.")
    p.add_argument("--config-file", default="rnn_configs.json", help="configuration list to create or extend (%(default)s)")
    p.add_argument("--results-dir", default="results_01_all", help="results folder to create (%(default)s)")
    p.add_argument("--state-sizes", type=int, nargs="+", default=list(DEFAULT_STATE_SIZES), metavar="N",
                   help="state sizes (%(default)s)")
    p.add_argument("--layers", type=int, nargs="+", default=list(DEFAULT_LAYERS), metavar="N", help="depths (%(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                   help="give each configuration a seed key, one entry per seed (overrides training's --seed)")
    p.add_argument("--cells", nargs="+", default=["gated"], metavar="CELL",
                   help="cell kinds: gated gru lstm rnn esn esgp (%(default)s); esn enters with both readouts")
    p.add_argument("--bptt", type=int, nargs="+", default=[1], metavar="K",
                   help="truncation: 1 = detach every step (default), K > 1 = BPTT over K steps")
    p.add_argument("--refine-from", default=None, metavar="DIR",
                   help="instead of the grid: the best --top fraction of the finished runs in DIR, "
                        "with state size 512 and at least 3 layers")
    p.add_argument("--top", type=float, default=0.1, help="fraction kept by --refine-from (%(default)s)")
    args = p.parse_args(argv)
    try:
        for name in ("state_sizes", "layers"):
            for v in getattr(args, name):
                if v < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if args.seeds is not None and any(s < 0 for s in args.seeds):
            raise ValueError(f"--seeds must be >= 0, got {args.seeds}")
        if args.refine_from is not None:
            from .results import load

            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                configs = refine(load(args.refine_from), args.top)
            if not configs:
                raise ValueError(f"{args.refine_from}: no finished runs to refine from")
        else:
            if any(k < 1 for k in args.bptt):
                raise ValueError(f"--bptt must be >= 1, got {args.bptt}")
            configs = default_grid(args.state_sizes, args.layers, args.seeds, args.cells, args.bptt)
        results = Path(args.results_dir)
        if results.exists() and not results.is_dir():
            raise ValueError(f"{results}: exists and is not a folder")
        added, total = merge_configs(args.config_file, configs)
        results.mkdir(parents=True, exist_ok=True)
    except (ValueError, ConfigFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.config_file}: {total} configurations ({added} new); results go to {results}/")
    return 0
