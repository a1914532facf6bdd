"""Generated result folders for the analysis tests: ours and the original study's format."""

import json
import math
from pathlib import Path

import numpy as np

from gatedrnn.spec.grid import default_grid


def curve(final: float, n: int = 40, rng=None) -> list[float]:
    t = np.arange(1, n + 1)
    noise = rng.normal(0, 0.01, n) if rng is not None else 0
    return list(map(float, final + (3.0 - final) * np.exp(-t / 8) + noise))


def make_results(folder: Path, n: int = 432, original: int = 0, seed: int = 0, sha: str | None = None,
                 losses=None) -> list[dict]:
    """``n`` result files (the first ``original`` in the original study's format). The metric
    is a known function of the switches, so the effects are known."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for i, cfg in enumerate(default_grid()[:n]):
        d = cfg.to_dict(with_id=True)
        final = (losses[i] if losses is not None else
                 2.4 - 0.3 * d["use_forget_gate"] - 0.15 * d["use_residual"] + 0.05 * d["n_layers"]
                 + float(rng.normal(0, 0.02)))
        c = curve(final, rng=rng)
        rec = {**d, "loss": c, "min loss": min(c), "start time": 0.0, "end time": 10.0,
               "training steps": 2000, "batch size": 256, "history size": 1000}
        if i >= original:
            rec.update({"status": "done", "val loss": final + 0.05, "val bpb": (final + 0.05) / math.log(2),
                        "log every": 50, "dataset": "builtin:python-docs", "seed": 0,
                        "parameters": 1000, "steps per second": 100.0})
            if sha:
                rec["dataset sha256"] = sha
        else:
            rec["dataset"] = "enwik8"
        (folder / f"{d['id']}.json").write_text(json.dumps(rec))
        recs.append(rec)
    return recs
