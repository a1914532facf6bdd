"""Successive halving (gatedrnn/halving.py; issue 32): the promotion rule on records whose truth is
known, and whole sweeps with real worker processes and real signals: killed during a rung and
during a promotion, they promote the same configurations and end with the same records as an
uninterrupted sweep; a survivor is its uninterrupted run; the cost."""

import json
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.spec.config import CONFIG_KEYS, config_id
from gatedrnn.store.folder import ResultsFolder
from gatedrnn.spec.grid import default_grid
from gatedrnn.running.halving import Halving, decide
from helpers import gatedrnn, kill, results, script, start_worker, write_configs

# rungs at 20, 60 and 180 steps; many log and checkpoint points so that kills land mid-rung
ARGS = ["--steps", "180", "--batch-size", "4", "--history", "30", "--device", "cpu", "--checkpoint-every", "10",
        "--log-every", "10", "--eval-every", "0", "--val-streams", "4", "--threads", "1", "--halving", "3"]
TIMING = ("start time", "end time", "steps per second", "train seconds", "worker", "inference ms per step (batch 1)",
          "inference ms per step (training batch)", "peak memory MB", "resumes", "versions", "pack", "attempts")


def rung_records(n_configs, values, seeds=(0,), lrs=None):
    """Rung records as ``results.load`` reads them: ``values[i]`` the val loss of configuration i
    (plus 0.01 x seed), every switch combination of the default grid in order."""
    rows = []
    for i, cfg in enumerate(default_grid(state_sizes=[32], layers=[1])[:n_configs]):
        for seed in seeds:
            for lr in lrs or [None]:
                d = cfg.to_dict() | ({"lr": lr} if lr else {})
                v = values(i, lr) + 0.01 * seed
                rows.append({**d, "id": config_id({**d, "seed": seed}), "config id": config_id(d), "seed": seed,
                             "seed blocks": True, "status": "done", "val loss": v, "min loss": v})
    return pd.DataFrame(rows)


def test_the_best_third_continue_and_the_rule_is_a_function_of_the_records():
    df = rung_records(12, lambda i, lr: 2.0 + i / 100)
    decision = decide(df, 3)
    assert decision["units"] == 12 and len(decision["promoted"]) == 4  # ceil(12 / 3)
    assert set(decision["promoted"]) == set(df["id"][:4]) and decision["kept for could be best"] == []
    shuffled = df.sample(frac=1, random_state=1).reset_index(drop=True)
    assert decide(shuffled, 3) == decision  # the order the records come in changes nothing
    assert len(decide(df.head(10), 3)["promoted"]) == 4  # ceil(10 / 3), rounded up


def test_a_configuration_that_could_be_best_is_never_stopped():
    """Three seeds: five configurations equal within their noise, seven clearly worse. The best
    ceil(12 / 3) = 4 continue, and so does the fifth, which could be best too."""
    rng = np.random.default_rng(0)
    means = [2.0, 2.0, 2.0, 2.0, 2.003] + [3.0] * 7
    df = rung_records(12, lambda i, lr: means[i], seeds=(0, 1, 2))
    df["val loss"] += rng.normal(0, 0.002, len(df))
    decision = decide(df, 3)
    assert decision["units"] == 12 and len(decision["kept for could be best"]) == 1
    units = list(df["config id"].unique())
    assert set(df[df["id"].isin(decision["promoted"])]["config id"]) == set(units[:5])
    assert len(decision["promoted"]) == 15  # five configurations with their three seeds


def test_with_a_swept_lr_an_architecture_continues_with_every_rate_and_seed():
    best_rate = {i: (1e-3 if i % 2 else 3e-3) for i in range(6)}
    df = rung_records(6, lambda i, lr: 2.0 + i / 10 + (0 if lr == best_rate[i] else 0.5), seeds=(0, 1), lrs=[1e-3, 3e-3])
    decision = decide(df, 3)
    assert decision["units"] == 6
    kept = df[df["id"].isin(decision["promoted"])]
    assert len(kept) == 2 * 2 * 2 and set(kept["lr"]) == {1e-3, 3e-3}  # two architectures, both rates, both seeds


def configs_of(n):
    return default_grid(state_sizes=[8], layers=[1])[:n]


def run_sweep(cwd, n=9, workers=2, extra=(), timeout=600):
    write_configs(cwd, configs_of(n))
    proc = script("training_01_all.py", "--workers", str(workers), *ARGS, *extra, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def decisions(cwd):
    folder = ResultsFolder(Path(cwd) / "results_01_all")
    return [folder.read_promotion(k) for k in (1, 2)]


def comparable(record):
    return {k: v for k, v in record.items() if k not in TIMING}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted halving sweep of 9 configurations, solo (--pack 1)."""
    cwd = tmp_path_factory.mktemp("straight")
    run_sweep(cwd, extra=["--pack", "1"])
    return cwd


@pytest.mark.slow
def test_a_halving_sweep_ends_every_configuration_at_its_rung_and_survivors_equal_their_runs(straight):
    done = results(straight)
    assert len(done) == 9 and all(r["status"] == "done" for r in done.values())
    promoted1, promoted2 = decisions(straight)
    assert len(promoted1["promoted"]) == 3 and len(promoted2["promoted"]) == 1  # ceil(9/3), ceil(3/3)
    by_rung = {k: sorted(cid for cid, r in done.items() if r["rung"] == k) for k in (1, 2, 3)}
    assert by_rung == {1: sorted(promoted1["stopped"]), 2: sorted(promoted2["stopped"]), 3: promoted2["promoted"]}
    for cid, r in done.items():
        assert r["training steps"] == {1: 20, 2: 60, 3: 180}[r["rung"]]
        assert r["stopped at rung"] == (r["rung"] < 3) and r["rung steps"] == [20, 60, 180]
        assert "test loss" in r and r["val loss"] == r["val curve"][-1][1]
    folder = ResultsFolder(straight / "results_01_all")
    assert not list(folder.checkpoints.glob("*.pt")) and not list(folder.claims.glob("*.json"))
    # the survivor, resumed from its checkpoint at each rung, is its uninterrupted run to 180 steps
    import torch

    torch.set_num_threads(1)
    top = done[promoted2["promoted"][0]]
    settings = TrainSettings(steps=180, batch_size=4, history=30, device="cpu", checkpoint_every=10, log_every=10,
                             eval_every=0, val_streams=4)
    alone = train(RNNConfig.from_dict({k: top[k] for k in CONFIG_KEYS}), settings)
    assert top["resumes"] == 2
    assert top["final weights sha256"] == alone["final weights sha256"] and top["loss"] == alone["loss"]
    assert top["test loss"] == alone["test loss"]
    # a rung's record is the stopped configuration's result
    stopped = promoted1["stopped"][0]
    assert comparable(json.loads(folder.rung_result(1, stopped).read_text())) == \
        {k: v for k, v in comparable(done[stopped]).items() if k != "stopped at rung"} | {"stopped at rung": False}


@pytest.mark.slow
def test_kills_during_rungs_promote_the_same_configurations_and_end_with_the_same_records(tmp_path, straight):
    """Three workers under random SIGKILLs (and one SIGINT) until the sweep is done: the same
    decisions, and every record equal to the uninterrupted sweep's but for timings."""
    write_configs(tmp_path, configs_of(9))
    rng = random.Random(7)
    kills = 0
    procs = [start_worker(*ARGS, "--pack", "1", cwd=tmp_path, name=f"w{i}") for i in range(3)]
    deadline = time.monotonic() + 500
    while len(results(tmp_path)) < 9 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 2.0))
        victim = rng.randrange(len(procs))
        if procs[victim].poll() is None and kills < 8:
            kill(procs[victim], signal.SIGINT if kills == 3 else signal.SIGKILL)
            kills += 1
        procs = [p if p.poll() is None else start_worker(*ARGS, "--pack", "1", cwd=tmp_path,
                                                          name=f"w{kills}-{i}") for i, p in enumerate(procs)]
    for p in procs:
        p.wait(timeout=300)
    assert kills >= 3
    assert decisions(tmp_path) == decisions(straight)
    mine, theirs = results(tmp_path), results(straight)
    assert set(mine) == set(theirs)
    for cid in theirs:
        assert comparable(mine[cid]) == comparable(theirs[cid]), cid


@pytest.mark.slow
def test_a_worker_killed_while_promoting_leaves_work_that_the_next_one_finishes(tmp_path, straight):
    """The crash state of a promotion cut short: rung 1's decision written, only some of the
    stopped configurations' results after it. A rerun writes the rest from their rung records,
    decides nothing twice, and ends as the uninterrupted sweep did."""
    run_sweep(tmp_path, extra=["--pack", "1"])
    folder = ResultsFolder(tmp_path / "results_01_all")
    decided = folder.promotion(1).read_text()
    cut = folder.read_promotion(1)["stopped"][:4]
    for cid in cut:
        folder.result(cid).unlink()
    proc = script("training_01_all.py", "--workers", "1", *ARGS, "--pack", "1", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert folder.promotion(1).read_text() == decided  # not decided again
    mine, theirs = results(tmp_path), results(straight)
    assert set(mine) == set(theirs)
    for cid in theirs:
        assert comparable(mine[cid]) == comparable(theirs[cid]), cid


@pytest.mark.slow
def test_packs_halve_too_and_the_cost_of_a_quick_study(tmp_path):
    """48 configurations in packs, one seed: the promotions count out as the rule says, the
    survivors continue as packs, and the configuration-steps are 26.9 % of the full sweep's."""
    write_configs(tmp_path, default_grid(state_sizes=[8], layers=[1])[:48])
    proc = script("training_01_all.py", "--workers", "2", *ARGS[:-2], "--halving", "3", "--pack", "48",
                  cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = results(tmp_path)
    assert len(done) == 48
    counts = {k: sum(r["rung"] == k for r in done.values()) for k in (1, 2, 3)}
    assert counts == {1: 32, 2: 10, 3: 6}
    assert all(r.get("pack") for r in done.values())  # every rung trained in packs
    spent = sum(r["training steps"] for r in done.values())
    assert spent == 48 * 20 + 16 * 40 + 6 * 120 == 2320  # every configuration to 20, 16 on to 60, 6 on to 180
    assert spent / (48 * 180) <= 0.45
    out = script("examine_results_01_all.py", "--out", "plots", cwd=tmp_path, check=True)
    assert "successive halving: 2320 of 8640 configuration-steps (26.9 %" in out.stdout
    md = (tmp_path / "plots/summary.md").read_text()
    assert "## Successive halving (ETA 3)" in md and "rung 1 → 2: Spearman" in md
    assert "are at rung 1 (20 steps)" in md
    status = gatedrnn("status", cwd=tmp_path)
    assert "successive halving: rung 1 (20 steps): 48 reached, 16 continue; rung 2 (60 steps): 16 reached, 6 " \
           "continue; rung 3 (180 steps): 6 reached" in status.stdout


def test_the_states_follow_the_records(tmp_path):
    folder = ResultsFolder(tmp_path)
    h = Halving(folder, 3, [20, 60, 180])
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    assert h.states([a]) == {a: ("train", 1)}
    folder.write_rung_result(1, {"id": a})
    folder.write_rung_result(1, {"id": b})
    assert h.states([a, b]) == {a: ("wait", 1), b: ("wait", 1)}
    folder.write_promotion(1, {"promoted": [a], "stopped": [b]})
    assert h.states([a, b, c]) == {a: ("train", 2), b: ("stop", 1), c: ("train", 1)}
    assert h.rung_of(19) == 0 and h.rung_of(60) == 2 and h.rung_of(180) == 3
    assert math.isclose(TrainSettings(steps=1800, halving=3).rung_steps()[0], 200)
    with pytest.raises(ValueError, match="halving 3 over 3 rungs needs steps of at least 9"):
        TrainSettings(steps=8, halving=3)
    with pytest.raises(ValueError, match="halving must be 0"):
        TrainSettings(halving=1)


@pytest.mark.slow
def test_examine_reads_a_halving_sweep_stopped_before_its_last_rung(tmp_path, straight):
    """A sweep stopped mid-way (rung 3 not reached by anyone) is examined without error; the cost
    counts the survivors' rungs and says that they are still training."""
    import shutil

    shutil.copytree(straight, tmp_path / "s")
    folder = ResultsFolder(tmp_path / "s" / "results_01_all")
    top = folder.read_promotion(2)["promoted"][0]
    folder.result(top).unlink()
    folder.rung_result(3, top).unlink()
    out = script("examine_results_01_all.py", "--out", "p", cwd=tmp_path / "s", check=True)
    assert "1 configurations still training" in out.stdout
    md = (tmp_path / "s" / "p" / "summary.md").read_text()
    assert "still training" in md and "rung 1 → 2: Spearman" in md and "rung 2 → 3" not in md
