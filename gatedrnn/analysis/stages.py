"""The later stages of a sweep, chosen from an earlier one's results (no torch): refine (the best
fraction at a larger state and depth) and replicate (the best few on fresh seeds), the original
study's stages 2 and 3; ``init_experiments.py --refine-from / --replicate-from``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from ..spec.config import RNNConfig
from ..store.folder import ResultsFolder
from .results import config_of, load
from .stats import rank_configurations
from .tuning import tune

__all__ = ["refine", "replicate", "replicate_seeds", "next_stage"]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _best(results: "Any", metric: str) -> "Any":
    df = results
    if "status" in df:
        df = df[df["status"].isna() | (df["status"] == "done")]
    return df[df[metric].notna()].sort_values(metric, kind="stable")


def _architecture(row: "Any", **changes: Any) -> RNNConfig:
    """The configuration of a results row without its seed (a first stage's swept seed is not
    carried over), with ``changes``."""
    config = {k: v for k, v in config_of(row).items() if not _missing(v)}
    return RNNConfig.from_dict({**config, **changes})


def refine(results: "Any", top: float, state_size: int = 512, min_layers: int = 3,
           metric: str = "min loss") -> list[RNNConfig]:
    """Second-stage configurations: the best ``top`` fraction of the rows of ``results`` (finished
    runs, or configurations with their mean, by ``metric``), each with ``state_size`` and at
    least ``min_layers`` layers."""
    if not 0 < top <= 1:
        raise ValueError(f"--top must be in (0, 1], got {top}")
    df = _best(results, metric)
    if df.empty:
        return []
    out, seen = [], set()
    for _, row in df.head(max(1, math.ceil(top * len(df)))).iterrows():
        config = _architecture(row, n_layers=max(int(row["n_layers"]), min_layers), state_size=state_size)
        if config.id not in seen:
            seen.add(config.id)
            out.append(config)
    return out


def replicate(results: "Any", top: int, seeds: Sequence[int], metric: str = "min loss") -> list[RNNConfig]:
    """The original study's third stage: the ``top`` best configurations of ``results`` (rows
    of configurations, or of runs, by ``metric``; a configuration counts once), each once per
    seed of ``seeds``."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"--top must be a whole number of configurations >= 1 with --replicate-from, got {top}")
    if not seeds:
        raise ValueError("--replicate-from needs --seeds")
    out, seen = [], []
    for _, row in _best(results, metric).iterrows():
        config = _architecture(row)
        if config.id in seen:
            continue
        seen.append(config.id)
        out += [_architecture(row, seed=int(s)) for s in seeds]
        if len(seen) == top:
            break
    return out


def replicate_seeds(results: "Any", seeds: Sequence[int] | None, replicates: int, allow_reuse: bool,
                    source: str) -> dict[str, Any]:
    """The replicate stage's seeds: ``seeds`` (ValueError, naming them, where the selecting
    stage's runs ``results`` used one, unless ``allow_reuse``), or the ``replicates`` smallest
    seeds that none of its runs used. Returns ``seeds``, ``selection seeds`` and ``reused``."""
    used = sorted({int(s) for s in results["seed"].dropna()}) if "seed" in results else []
    if not used and len(results):
        used = [0]  # results without a seed trained with the default one
    if seeds is None:
        if replicates < 1:
            raise ValueError(f"--replicates must be at least 1, got {replicates}")
        seeds = [s for s in range(max(used, default=0) + replicates + 1) if s not in used][:replicates]
    else:
        seeds = list(dict.fromkeys(seeds))
    reused = [s for s in seeds if s in used]
    if reused and not allow_reuse:
        raise ValueError(f"--seeds {' '.join(map(str, reused))}: used by the selecting stage in {source} (its runs "
                         f"have seeds {' '.join(map(str, used))}); an estimate on a seed that selected is biased: "
                         "choose others (omit --seeds for fresh ones) or pass --allow-seed-reuse")
    return {"selection seeds": used, "seeds": seeds, "reused": reused}


def next_stage(source: str, refining: bool, top: float | None, seeds: Sequence[int] | None, replicates: int,
               allow_reuse: bool) -> tuple[list[RNNConfig], dict[str, Any] | None, int, str]:
    """A stage chosen from the results in ``source`` by mean val loss (with a swept lr, each
    configuration at its best rate, :func:`gatedrnn.analysis.tuning.tune`): ``refine`` (``top``: the
    fraction, 0.1) or ``replicate`` (``top``: how many, 10; on :func:`replicate_seeds`). Returns
    the configurations, the replicate stage's record (None for refine), how many configurations
    were ranked, and the metric."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load(source)
    ranked, metric = rank_configurations(df)
    if len(ranked):  # a swept lr: each configuration once, at its best rate
        tuned = tune(df[(df["status"] == "done") & df[metric].notna()], metric)
        if tuned is not None:
            ranked = ranked[ranked["config id"].isin(set(tuned.chosen))].reset_index(drop=True)
    stage = None
    if refining:
        configs = refine(ranked, 0.1 if top is None else top, metric=metric) if len(ranked) else []
    else:
        top = 10 if top is None else top
        if top != int(top):
            raise ValueError(f"--top must be a whole number of configurations with --replicate-from, got {top:g}")
        stage = replicate_seeds(df, seeds, replicates, allow_reuse, source)
        configs = replicate(ranked, int(top), stage["seeds"], metric=metric) if len(ranked) else []
        earlier = ResultsFolder(source).read_stage()
        stage.update({"stage": "replicate", "selected from": str(Path(source).resolve()), "selected by": metric,
                      "selected in": (earlier or {}).get("selected from"),
                      "configurations": len(configs) // max(1, len(stage["seeds"]))})
    if not configs:
        raise ValueError(f"{source}: no finished runs to take configurations from")
    return configs, stage, len(ranked), metric
