"""What halving's stopping lost (gatedrnn/analysis/audit.py; issue 40), on simulated sweeps whose
truth is known: every configuration's value at each rung and at the end is drawn, the real
decision rule (gatedrnn.running.halving.decide, its audit draw included) picks who continues
and who is audited, only what a real sweep would have trained to the end is shown to the
estimates, and the truth is computed from the values of all. Curves that cross (the ranking at
rung 1 says little about the end) and curves that do not."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from gatedrnn.analysis.audit import count_interval, lost
from gatedrnn.running.halving import decide
from gatedrnn.spec.config import config_id
from gatedrnn.spec.grid import default_grid

UNITS = default_grid(state_sizes=[32], layers=[1])[:48]


def frame(values: dict[int, np.ndarray], seeds, extra=None) -> pd.DataFrame:
    """Records of units (index into UNITS) with one value per seed, as results.load reads them."""
    rows = []
    for i, per_seed in values.items():
        d = UNITS[i].to_dict()
        for s, v in zip(seeds, per_seed):
            rows.append({**d, "id": config_id({**d, "seed": s}), "config id": config_id(d), "seed": s,
                         "seed blocks": True, "status": "done", "val loss": float(v), "min loss": float(v),
                         **(extra(i) if extra else {})})
    return pd.DataFrame(rows)


def simulate(rng, seeds=(0,), cross=1.0, audit=0.2):
    """One halving sweep (ETA 3, three rungs) of 48 units: the estimates and the truth."""
    n = len(UNITS)
    end = rng.normal(0, 1, n)  # each unit's true final value
    # the value at rung k: the final one plus a drift that shrinks towards the end; cross scales it
    drift = [cross * rng.normal(0, 1.0, n), cross * rng.normal(0, 0.5, n)]
    noise = lambda: rng.normal(0, 0.3, (n, len(seeds)))  # noqa: E731  seed noise of each measurement
    at = [end[:, None] + drift[0][:, None] + noise(), end[:, None] + drift[1][:, None] + noise()]
    final = end[:, None] + noise()  # what training every unit to the end would measure
    frames, decisions, alive, audited = [], [], list(range(n)), set()
    uid = {config_id(UNITS[i].to_dict()): i for i in range(n)}
    for k in (1, 2):
        f = frame({i: at[k - 1][i] for i in alive}, seeds)
        d = decide(f, 3, audit=audit, seed=int(rng.integers(1 << 30)), rung=k)
        frames.append(f)
        decisions.append(d)
        drawn = {uid[u] for s in d["audit"]["strata"] for u in s["drawn"]}
        audited |= drawn
        alive = sorted({uid[c] for c in f.loc[f["id"].isin(d["promoted"]), "config id"]})
    survivors = alive
    trained = sorted(set(survivors) | audited)
    frames.append(frame({i: final[i] for i in trained}, seeds, extra=lambda i: {"audited": i in audited}))
    est = lost(frames, decisions, "val loss")
    # the truth, from every unit's final measurement
    fmean = final.mean(1)
    best = min(fmean[i] for i in survivors)
    stopped = [uid[u] for d in decisions for s in d["audit"]["strata"] for u in s["units"]]
    truth_better = sum(fmean[i] < best for i in stopped)
    entered = [[uid[u] for u in d["ranking"]] for d in decisions]
    truth_rho = [sps.spearmanr(at[k][entered[k]].mean(1), fmean[entered[k]]).statistic for k in (0, 1)]
    return est, truth_better, truth_rho


def covers(lo, hi, truth, eps=1e-9):
    return lo - eps <= truth <= hi + eps


def test_the_count_interval_is_exact_where_the_sample_is_everything_and_wide_where_it_is_nothing():
    assert count_interval(10, 10, 3, 0.05) == (3, 3)
    assert count_interval(10, 0, 0, 0.05) == (0, 10)
    lo, hi = count_interval(20, 5, 0, 0.05)
    assert lo == 0 and 0 < hi < 20
    lo, hi = count_interval(20, 5, 5, 0.05)
    assert 0 < lo and hi == 20


@pytest.mark.parametrize("cross", [3.0, 0.2], ids=["curves that cross", "curves that do not"])
def test_the_intervals_on_what_stopping_lost_cover_the_truth(cross):
    """200 simulated sweeps, one seed: the interval on the number of stopped configurations better
    than the best survivor covers the true number in >= 90 % of them, and so does each rung's
    agreement with the final ranking over all the configurations that entered it."""
    rng = np.random.default_rng(40 if cross > 1 else 41)
    hit_better, hit_rho, sims = 0, [0, 0], 200
    truths, widths = [], []
    for _ in range(sims):
        est, truth_better, truth_rho = simulate(rng, cross=cross)
        b = est["better"]
        hit_better += covers(b["ci low"], b["ci high"], truth_better)
        truths.append(truth_better)
        widths.append(b["ci high"] - b["ci low"])
        for k in (0, 1):
            a = est["rungs"][k]["agreement"]
            hit_rho[k] += math.isfinite(a["ci low"]) and covers(a["ci low"], a["ci high"], truth_rho[k])
    print(f"cross {cross}: better covers {hit_better}/{sims} (truth mean {np.mean(truths):.1f}, interval width "
          f"{np.median(widths):.0f} of {len(UNITS) - 6} stopped), agreement covers {hit_rho}")
    assert hit_better >= 0.9 * sims
    assert min(hit_rho) >= 0.9 * sims
    assert np.median(widths) < 0.75 * (len(UNITS) - 6)  # an interval that says something
    if cross > 1:
        assert np.mean(truths) > 1  # the case where stopping loses something, so the test can fail
