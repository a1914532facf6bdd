"""Replicates, seed-blocked comparisons and matched-pair effects (gatedrnn.stats), on synthetic
sweeps whose true effects and seed noise are known (no training)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from gatedrnn import results
from gatedrnn.analysis import examine
from gatedrnn.config import CONFIG_KEYS, SWITCHES, config_id
from gatedrnn.grid import default_grid, merge_configs, read_configs, replicate
from gatedrnn.stats import (compare, effects, mean_interval, rank_configurations, ranking_metric, seed_noise,
                            seed_table, summarise, t_quantile, ties_with_best)
from helpers import script

TRUE = {"use_forget_gate": -0.30, "use_residual": -0.15, "use_input_gate": 0.0}  # the rest: no effect


def sweep(rng, seeds=(0, 1, 2), seed_effect=0.0, noise=0.05, n=96):
    """Runs of the first ``n`` default-grid configurations: val loss = 2.4 + the true effects +
    a shared effect per seed (its data order) + independent noise."""
    shift = {s: rng.normal(0, seed_effect) for s in seeds}
    rows = []
    for cfg in default_grid(state_sizes=[256], layers=[1])[:n]:
        d = cfg.to_dict()
        base = 2.4 + sum(v * d[k] for k, v in TRUE.items())
        for s in seeds:
            val = base + shift[s] + rng.normal(0, noise)
            rows.append({**d, "seed": s, "status": "done", "val loss": val, "min loss": val - 0.2,
                         "config id": config_id(d), "id": config_id({**d, "seed": s})})
    return pd.DataFrame(rows)


def test_t_quantile_and_mean_interval():
    assert t_quantile(1) == 12.706 and t_quantile(30) == 2.042
    assert 2.021 < t_quantile(35) < 2.042 and 1.960 < t_quantile(10_000) < 1.962
    assert math.isnan(t_quantile(0))
    mean, std, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == 1.0 and hi - mean == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(mean_interval([1.0])[2]) and math.isnan(mean_interval([])[0])


def test_summarise_groups_replicates_into_one_row_per_configuration():
    df = sweep(np.random.default_rng(0), n=10)
    s = summarise(df, ["val loss", "min loss"])
    assert len(s) == 10 and (s["runs"] == 3).all() and (s["seeds"] == "0 1 2").all()
    first = df[df["config id"] == s["config id"].iloc[0]]["val loss"]
    assert s["val loss mean"].iloc[0] == pytest.approx(first.mean())
    assert s["val loss std"].iloc[0] == pytest.approx(first.std(ddof=1))
    assert s["val loss ci low"].iloc[0] < s["val loss mean"].iloc[0] < s["val loss ci high"].iloc[0]
    assert ranking_metric(df) == "val loss"
    assert ranking_metric(df.assign(**{"val loss": np.nan})) == "min loss"


def test_effect_intervals_cover_the_true_effect_and_zero_for_a_null_switch():
    covered = {k: 0 for k in TRUE}
    for trial in range(100):
        df = sweep(np.random.default_rng(1000 + trial), seed_effect=0.05, noise=0.05)
        table, _ = effects(df, "val loss", list(SWITCHES), n_boot=400, seed=trial)
        for key, true in TRUE.items():
            row = table[table["hyperparameter"] == key].iloc[0]
            covered[key] += row["ci low"] <= true <= row["ci high"]
    # a 95 % interval: allow a loose bound over 100 simulated sweeps
    assert all(v >= 85 for v in covered.values()), covered
    table, diffs = effects(sweep(np.random.default_rng(7)), "val loss", list(SWITCHES), n_boot=400)
    forget = table[table["hyperparameter"] == "use_forget_gate"].iloc[0]
    assert forget["ci high"] < 0 and forget["share improved"] > 0.95 and forget["pairs"] == len(diffs[
        ("use_forget_gate", False, True)])
    assert list(table.columns) == ["hyperparameter", "from", "to", "pairs", "median difference", "ci low",
                                   "ci high", "share improved"]


def test_pairs_differ_in_exactly_one_key():
    df = sweep(np.random.default_rng(3), n=96)
    _, diffs = effects(df, "val loss", ["use_residual"], n_boot=50)
    by_cfg = df.drop_duplicates("config id")
    on, off = by_cfg[by_cfg["use_residual"]], by_cfg[~by_cfg["use_residual"]]
    others = [k for k in CONFIG_KEYS if k != "use_residual"]
    matched = pd.merge(on[others], off[others], on=others)
    assert len(diffs[("use_residual", False, True)]) == len(matched) > 0


def test_blocking_by_seed_narrows_the_interval_when_seeds_share_a_data_order_effect():
    rng = np.random.default_rng(5)
    paired, unpaired = [], []
    for _ in range(50):
        seeds = list(range(6))
        shift = rng.normal(0, 0.2, len(seeds))  # a large shared effect of each seed's data order
        a = pd.Series(2.0 + shift + rng.normal(0, 0.02, 6), index=seeds)
        b = pd.Series(2.05 + shift + rng.normal(0, 0.02, 6), index=seeds)
        c = compare(a, b)
        paired.append(c["ci high"] - c["ci low"])
        assert c["paired seeds"] == 6
        d = compare(a.set_axis(range(6)), b.set_axis(range(10, 16)))  # no shared seed: unpaired
        unpaired.append(d["ci high"] - d["ci low"])
        assert d["paired seeds"] == 0
    assert np.median(paired) < 0.25 * np.median(unpaired)


def test_ties_with_the_best_are_judged_within_seeds():
    rng = np.random.default_rng(11)
    df = sweep(rng, seeds=range(5), seed_effect=0.1, noise=0.01, n=24)
    table = seed_table(df, "val loss")
    best = table.mean(axis=1).idxmin()
    ties = ties_with_best(table, best)
    assert len(ties) == 23
    true = {cid: 2.4 + sum(v * g[k].iloc[0] for k, v in TRUE.items()) for cid, g in df.groupby("config id")}
    equal = [r["tied"] for _, r in ties.iterrows() if abs(true[r["config id"]] - true[best]) < 1e-9]
    different = [r["tied"] for _, r in ties.iterrows() if abs(true[r["config id"]] - true[best]) >= 0.1]
    assert len(equal) >= 3 and len(different) >= 5
    assert not any(different)  # a real difference of 0.15 against noise 0.01 is never a tie
    assert sum(equal) >= 0.7 * len(equal)  # a 95 % interval keeps most true ties (one comparison at a time)
    assert ties_with_best(table.iloc[:, :1], best) is None  # one run each: cannot tell
    noise = seed_noise(table)
    assert 0.005 < noise["seed std"] < 0.2 and noise["between std"] > 0.05


def write_third_stage(folder, configs, trainings=10, seed=0):
    """The original study's third stage: ten trainings per configuration under a common id."""
    rng = np.random.default_rng(seed)
    means = {}
    for k, cfg in enumerate(configs):
        d = cfg.to_dict()
        vals = []
        for t in range(trainings):
            v = 1.5 + 0.1 * k + float(rng.normal(0, 0.02))
            vals.append(v)
            rec = {**d, "common id": f"c{k}", "training": t, "unique id": f"c{k}-{t}", "loss": [3.0, v],
                   "min loss": v, "training steps": 10000, "batch size": 256, "history size": 1000}
            (folder / f"c{k}_{t}.json").write_text(json.dumps(rec))
        means[config_id(d)] = float(np.mean(vals))
    return means


def test_the_original_studys_third_stage_is_grouped_into_its_configurations(tmp_path):
    configs = default_grid()[:10]
    means = write_third_stage(tmp_path, configs)
    df = results.load(tmp_path)
    assert len(df) == 100 and df["id"].nunique() == 100 and df["config id"].nunique() == 10
    s = summarise(df, ["min loss"])
    assert (s["runs"] == 10).all()
    for _, row in s.iterrows():
        assert row["min loss mean"] == pytest.approx(means[row["config id"]])
    report = examine(tmp_path, tmp_path / "out")
    assert report.metric == "min loss" and report.configurations == 10
    assert report.best["id"] == config_id(configs[0].to_dict()) and report.best["runs"] == 10
    assert report.ties == 0 and report.compared == 9
    summary = pd.read_csv(tmp_path / "out/summary.csv")
    assert len(summary) == 10 and (summary["runs"] == 10).all()
    assert len(pd.read_csv(tmp_path / "out/runs.csv")) == 100


def test_the_replicate_stage_picks_the_best_configurations_once_per_seed_and_is_idempotent(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    grid = default_grid(state_sizes=[32], layers=[1])[:12]
    for i, cfg in enumerate(grid):
        for s in (0, 1):  # the first stage ran two seeds of each
            d = cfg.to_dict()
            rec = {**d, "seed": s, "id": config_id({**d, "seed": s}), "status": "done", "loss": [3.0, 2.0],
                   "min loss": 2.0 + (11 - i) / 10, "val loss": 2.0 + i / 10 + s / 100}
            (res / f"{rec['id']}.json").write_text(json.dumps(rec))
    args = ["--replicate-from", "res", "--top", "3", "--seeds", "0", "1", "2", "3", "--config-file", "stage3.json"]
    proc = script("init_experiments.py", *args, cwd=tmp_path, check=True)
    assert "ranked 12 configurations by mean val loss" in proc.stdout
    entries = read_configs(tmp_path / "stage3.json")
    assert len(entries) == 12
    # by val loss (the runs have it), not min loss: the first three configurations of the grid
    expected = [{**g.to_dict(), "seed": s} for g in grid[:3] for s in range(4)]
    assert [{k: v for k, v in e.items() if k != "id"} for e in entries] == expected
    before = (tmp_path / "stage3.json").read_bytes()
    script("init_experiments.py", *args, cwd=tmp_path, check=True)
    assert (tmp_path / "stage3.json").read_bytes() == before
    bad = script("init_experiments.py", "--replicate-from", "res", "--top", "2.5", "--seeds", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--top must be a whole number" in bad.stderr
    ranked, metric = rank_configurations(results.load(res))
    assert metric == "val loss" and len(replicate(ranked, 2, [5], metric=metric)) == 2


def test_examine_reports_replicates_with_bands_intervals_and_effects(tmp_path):
    res = tmp_path / "results_01_all"
    res.mkdir()
    df = sweep(np.random.default_rng(2), n=48)
    configs = []
    for _, r in df.iterrows():
        d = {k: (bool(r[k]) if k in SWITCHES else int(r[k])) for k in CONFIG_KEYS}
        configs.append(d)
        rec = {**d, "seed": int(r["seed"]), "id": r["id"], "status": "done", "loss": [3.0, 2.6, r["val loss"] + 0.1],
               "min loss": r["min loss"], "val loss": r["val loss"], "log every": 50, "epochs": 2.5}
        (res / f"{r['id']}.json").write_text(json.dumps(rec))
    merge_configs(tmp_path / "q.json", [__import__("gatedrnn").RNNConfig(**c, seed=s)
                                         for c, s in zip(configs, df["seed"].astype(int))])
    (tmp_path / "rnn_configs.json").write_text("[]")  # an unrelated file in the working directory
    proc = script("examine_results_01_all.py", "--out", "out", cwd=tmp_path, check=True)
    assert "no configuration file to compare with" in proc.stdout  # not the unrelated ./rnn_configs.json
    from gatedrnn.queue import Queue

    Queue(res).record_config_file(tmp_path / "q.json")  # as the training launcher records it
    proc = script("examine_results_01_all.py", "--out", "out", cwd=tmp_path, check=True)
    assert "done 144 · diverged 0 · failed 0 · running 0 · pending 0 (of 144)" in proc.stdout
    assert "ranked by: mean val loss" in proc.stdout and "over 3 run(s)" in proc.stdout
    assert "tied with the best:" in proc.stdout and "seed noise: std" in proc.stdout
    summary = pd.read_csv(tmp_path / "out/summary.csv")
    assert len(summary) == 48 and (summary["runs"] == 3).all()
    for col in ("val loss mean", "val loss std", "val loss ci low", "val loss ci high", "min loss mean"):
        assert col in summary
    eff = pd.read_csv(tmp_path / "out/effects.csv")
    assert set(eff["hyperparameter"]) >= {"use_forget_gate", "use_residual"}
    md = (tmp_path / "out/summary.md").read_text()
    assert "Seed noise: a configuration's val loss moves by" in md and "memorising" in md
    assert "## Matched-pair effects on val loss" in md
