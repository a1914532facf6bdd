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


def test_the_protect_rule_never_stops_one_that_could_be_best_and_the_top_rule_does():
    """Three seeds: five configurations equal within their noise, seven clearly worse. The best
    ceil(12 / 3) = 4 continue; under ``protect`` (folders before issue 40) so does the fifth,
    which could be best too; under ``top`` (the default) it stops."""
    rng = np.random.default_rng(0)
    means = [2.0, 2.0, 2.0, 2.0, 2.003] + [3.0] * 7
    df = rung_records(12, lambda i, lr: means[i], seeds=(0, 1, 2))
    df["val loss"] += rng.normal(0, 0.002, len(df))
    decision = decide(df, 3, rule="protect")
    assert decision["units"] == 12 and len(decision["kept for could be best"]) == 1
    units = list(df["config id"].unique())
    assert set(df[df["id"].isin(decision["promoted"])]["config id"]) == set(units[:5])
    assert len(decision["promoted"]) == 15  # five configurations with their three seeds
    top = decide(df, 3)
    assert top["rule"] == "top" and len(top["promoted"]) == 12 and top["kept for could be best"] == []


def test_the_audit_draws_from_both_strata_with_recorded_inclusion_and_the_same_sample_every_time():
    df = rung_records(48, lambda i, lr: 2.0 + i / 100, seeds=(0, 1, 2))
    d = decide(df, 3, audit=0.2, seed=5)
    near, rest = d["audit"]["strata"]
    assert [s["name"] for s in (near, rest)] == ["near the cut", "rest"]
    assert near["units"] == d["ranking"][16:32] and rest["units"] == d["ranking"][32:]  # in rank order
    assert len(near["drawn"]) == 4 and len(rest["drawn"]) == 3  # ceil(0.2 x 32) = 7, half from each
    assert near["inclusion"] == 4 / 16 and rest["inclusion"] == 3 / 16
    drawn = set(near["drawn"]) | set(rest["drawn"])
    assert set(df[df["id"].isin(d["audited"])]["config id"]) == drawn and len(d["audited"]) == 7 * 3
    assert set(d["audited"]) <= set(d["stopped"])  # audited runs are stopped runs that go on
    assert decide(df.sample(frac=1, random_state=3).reset_index(drop=True), 3, audit=0.2, seed=5) == d
    other = [decide(df, 3, audit=0.2, seed=s)["audited"] for s in range(6, 12)]
    assert any(o != d["audited"] for o in other)  # the seed draws
    assert decide(df, 3, audit=0.2, seed=5, cap=1)["audited"].__len__() == 4 * 3  # never below two per stratum
    assert decide(df, 3, audit=0.0, seed=5)["audited"] == []


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


def alone(record):
    """The record's configuration trained straight to 180 steps, as ARGS train it."""
    import torch

    torch.set_num_threads(1)
    settings = TrainSettings(steps=180, batch_size=4, history=30, device="cpu", checkpoint_every=10, log_every=10,
                             eval_every=0, val_streams=4)
    return train(RNNConfig.from_dict({k: record[k] for k in CONFIG_KEYS}), settings)


@pytest.mark.slow
def test_a_halving_sweep_ends_every_configuration_at_its_rung_and_survivors_equal_their_runs(straight):
    done = results(straight)
    assert len(done) == 9 and all(r["status"] == "done" for r in done.values())
    d1, d2 = decisions(straight)
    assert len(d1["promoted"]) == 3 and len(d2["promoted"]) == 1  # ceil(9/3), ceil(3/3)
    # the audit (share 0.2, at least two per stratum): two of each stratum at rung 1, both at rung 2
    assert [len(s["drawn"]) for s in d1["audit"]["strata"]] == [2, 2] and len(d1["audited"]) == 4
    assert len(d2["audited"]) == 2 and set(d2["audited"]) == set(d2["stopped"])
    paused = (set(d1["stopped"]) - set(d1["audited"])) | (set(d2["stopped"]) - set(d2["audited"]))
    by_rung = {k: sorted(cid for cid, r in done.items() if r["rung"] == k) for k in (1, 2, 3)}
    assert by_rung == {1: sorted(set(d1["stopped"]) - set(d1["audited"])), 2: [],
                       3: sorted(d2["promoted"] + d1["audited"] + d2["audited"])}
    for cid, r in done.items():
        assert r["training steps"] == {1: 20, 2: 60, 3: 180}[r["rung"]]
        assert r["stopped at rung"] == (cid in paused) and r["rung steps"] == [20, 60, 180]
        assert r.get("audited", False) == (cid in set(d1["audited"]) | set(d2["audited"]))
        assert "test loss" in r and r["val loss"] == r["val curve"][-1][1]
    assert {done[c]["audited at rung"] for c in d1["audited"]} == {1}
    folder = ResultsFolder(straight / "results_01_all")
    # a stopped run is paused: its checkpoint stays (to continue); nothing else is left behind
    assert {p.stem for p in folder.kept_checkpoints.glob("*.pt")} == paused and not list(folder.claims.glob("*.json"))
    assert not list(folder.checkpoints.glob("*.pt"))  # set aside: checkpoints/ holds the runs in flight alone
    # the survivor and an audited run, resumed from their checkpoints, are their uninterrupted runs
    for cid in (d2["promoted"][0], d1["audited"][0]):
        straight_run = alone(done[cid])
        assert done[cid]["final weights sha256"] == straight_run["final weights sha256"]
        assert done[cid]["loss"] == straight_run["loss"] and done[cid]["test loss"] == straight_run["test loss"]
    assert done[d2["promoted"][0]]["resumes"] == 2 and done[d1["audited"][0]]["resumes"] == 1
    # a rung's record is the stopped configuration's result
    stopped = sorted(paused)[0]
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
    d1 = folder.read_promotion(1)
    cut = [cid for cid in d1["stopped"] if cid not in d1["audited"]][:2] + d1["audited"][:1]
    for cid in cut:  # two paused runs' results, and a run at the last rung killed before its result
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
    # rung 1: 16 continue, 7 of the 32 stopped are audited (ceil(0.2 x 32)); rung 2: 6 continue, 4 of
    # the 10 stopped audited (two per stratum, the minimum)
    assert counts == {1: 32 - 7, 2: 10 - 4, 3: 6 + 7 + 4}
    assert sum(bool(r.get("audited")) for r in done.values()) == 11
    assert all(r.get("pack") for r in done.values())  # every rung trained in packs
    spent = sum(r["training steps"] for r in done.values())
    # every configuration to 20, 16 on to 60, 6 on to 180; the audited from their rung to 180
    assert spent == 48 * 20 + 16 * 40 + 6 * 120 + 7 * 160 + 4 * 120 == 3920
    assert spent / (48 * 180) <= 0.5
    out = script("examine_results_01_all.py", "--out", "plots", cwd=tmp_path, check=True)
    assert "successive halving: 3920 of 8640 configuration-steps (45.4 %" in out.stdout
    md = (tmp_path / "plots/summary.md").read_text()
    assert "## Successive halving (ETA 3)" in md and "rung 1 → 2: Spearman" in md
    assert "are at rung 1 (20 steps)" in md
    status = gatedrnn("status", cwd=tmp_path)
    assert "successive halving: rung 1 (20 steps): 48 reached, 16 continue, 7 audited; rung 2 (60 steps): 16 " \
           "reached, 6 continue, 4 audited; rung 3 (180 steps): 17 reached; stopped runs: 31 paused (checkpoint " \
           "kept: --continue-stopped), 11 of 11 audited at the end, 0 of 0 continued by hand at the end" in status.stdout
    # the packs kept only for paused runs are set aside: a claim reads the live records alone (issue 41)
    folder = ResultsFolder(tmp_path / "results_01_all")
    assert folder.pack_records() == {}
    kept = folder.pack_records(kept=True)
    paused = sorted(folder.paused_ids())
    assert len(paused) == 31 and kept and all(folder.pack_checkpoint(pid, kept=True).exists() for pid in kept)
    assert not list(folder.checkpoints.glob("*.pt"))
    assert set(paused) <= {cid for rec in kept.values() for cid in rec["members"]}
    assert folder.kept_max_seq() == max(rec["seq"] for rec in kept.values())
    chosen = paused[0]
    assert folder.newest_pack_checkpoint(chosen) is None and folder.newest_pack_checkpoint(chosen, kept=True)
    proc = script("training_01_all.py", "--workers", "1", *ARGS[:-2], "--halving", "3", "--pack", "48",
                  "--continue-stopped", chosen, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 stopped configuration(s) continue" in proc.stdout and "trains from the start" not in proc.stdout
    r = results(tmp_path)[chosen]
    assert r["continued"] is True and r["rung"] == 3 and r["resumes"] >= 1  # from its pack's state, brought back
    assert folder.pack_records() == {}  # set aside again once it finished
    pruned = gatedrnn("prune", "--stopped", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert folder.pack_records(kept=True) == {} and not list(folder.checkpoints.rglob("*.pt"))


def test_a_worker_killed_while_setting_a_paused_pack_aside_loses_no_state(tmp_path):
    """keep_pack moves a paused pack's checkpoint to checkpoints/kept/, then its record: killed
    between the two, the next look finishes the move instead of taking the record for one that
    never saved a state (which would delete the kept checkpoint), and the run can continue."""
    from gatedrnn.store.folder import pack_id_of
    from gatedrnn.store.queue import Queue

    configs = [c.to_dict(with_id=True) for c in default_grid(state_sizes=[8], layers=[1])[:3]]
    ids = [c["id"] for c in configs]
    folder = ResultsFolder(tmp_path)
    folder.prepare()
    pid = pack_id_of(ids[:2])
    folder.write_pack_record(pid, ids[:2], time.time(), None, "w", seq=4)
    folder.rung_dir(1).mkdir(parents=True)
    for cid, config in zip(ids[:2], configs):
        record = {**config, "status": "done", "loss": [2.0], "training steps": 20, "rung": 1}
        folder.rung_result(1, cid).write_text(json.dumps(record))
        folder.write_result({**record, "stopped at rung": True})
    folder.write_promotion(1, {"rung": 1, "steps": 20, "eta": 3, "promoted": ids[2:], "stopped": ids[:2]})
    state = b"the pack's state"
    kept = folder.pack_checkpoint(pid, kept=True)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(state)  # moved; the record not yet: killed here
    q = Queue(tmp_path)
    q.tidy_packs()
    assert kept.read_bytes() == state and folder.pack_records() == {}
    assert list(folder.pack_records(kept=True)) == [pid] and folder.kept_max_seq() == 4
    out = q.reopen_stopped(configs, [ids[0]])
    assert out["no checkpoint"] == [] and folder.newest_pack_checkpoint(ids[0]) == folder.pack_checkpoint(pid)
    assert folder.pack_checkpoint(pid).read_bytes() == state


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


def paused_of(cwd):
    d1, d2 = decisions(cwd)
    return sorted((set(d1["stopped"]) - set(d1["audited"])) | (set(d2["stopped"]) - set(d2["audited"])))


@pytest.mark.slow
def test_a_stopped_run_continues_to_the_end_as_if_it_had_been_promoted_and_prune_frees_the_rest(tmp_path, straight):
    import shutil

    shutil.copytree(straight, tmp_path / "s")
    cwd = tmp_path / "s"
    folder = ResultsFolder(cwd / "results_01_all")
    paused = paused_of(cwd)
    before = results(cwd)
    bad = script("training_01_all.py", "--workers", "1", *ARGS, "--pack", "1", "--continue-stopped", "ab" * 32, cwd=cwd)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "is not a run stopped at a rung" in bad.stderr
    assert results(cwd) == before  # bad input changes nothing
    chosen = paused[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exported = gatedrnn("export", "mlflow", "--tracking-uri", uri, "--experiment", "h", cwd=cwd)
    assert exported.returncode == 0 and "9 created" in exported.stdout
    proc = script("training_01_all.py", "--workers", "1", *ARGS, "--pack", "1", "--continue-stopped", chosen, cwd=cwd,
                  timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 stopped configuration(s) continue to 180 steps" in proc.stdout
    r = results(cwd)[chosen]
    assert r["rung"] == 3 and r["continued"] is True and r["stopped at rung"] is False and r["training steps"] == 180
    kept = json.loads((folder.root / f"{chosen}.stopped-1.json").read_text())
    assert kept == before[chosen]  # the stopped record is kept aside, as --retry-failed keeps failures
    assert r["final weights sha256"] == alone(r)["final weights sha256"]  # as if never stopped
    again = gatedrnn("export", "mlflow", "--tracking-uri", uri, "--experiment", "h", cwd=cwd)
    assert "0 created, 1 updated, 8 up to date" in again.stdout  # the MLflow run follows the continued result
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = next(x for x in client.search_runs([client.get_experiment_by_name("h").experiment_id])
               if x.data.tags["gatedrnn.id"] == chosen)
    assert run.data.tags["gatedrnn.rung"] == f"3 of 3 (continued by hand from rung {r['continued from rung']})"
    assert run.data.metrics["final val loss"] == r["val loss"]
    status = gatedrnn("status", cwd=cwd)
    assert f"{len(paused) - 1} paused" in status.stdout and "1 of 1 continued by hand at the end" in status.stdout
    # the estimates never use a run continued by hand: examine says the same as before it
    out = script("examine_results_01_all.py", "--out", "p", cwd=cwd, check=True)
    theirs = script("examine_results_01_all.py", "--out", "p", cwd=straight, check=True)
    line = lambda text: next(ln for ln in text.splitlines() if ln.startswith("halving: "))  # noqa: E731
    assert "would have beaten the best survivor" in line(out.stdout)
    assert line(out.stdout).split(";", 1)[1] == line(theirs.stdout).split(";", 1)[1]  # its cost counts, not its result
    # a run stopped before pauses kept checkpoints trains from the start, saying so
    other = paused[1]
    folder.kept_checkpoint(other).unlink()
    proc = script("training_01_all.py", "--workers", "1", *ARGS, "--pack", "1", "--continue-stopped", other, cwd=cwd,
                  timeout=300)
    assert f"{other[:12]}: stopped before stopped runs kept their checkpoints: it trains from the start" in proc.stdout
    assert results(cwd)[other]["final weights sha256"] == alone(results(cwd)[other])["final weights sha256"]
    # prune: the other paused runs' checkpoints go, saying what it frees
    left = {p.stem for p in folder.kept_checkpoints.glob("*.pt")}
    assert left == set(paused[2:])
    pruned = gatedrnn("prune", "--stopped", cwd=cwd)
    assert pruned.returncode == 0 and f"removed {len(left)} checkpoint(s) of stopped runs, freeing" in pruned.stdout
    assert not list(folder.checkpoints.rglob("*.pt"))


@pytest.mark.slow
def test_a_continued_run_killed_midway_ends_as_one_that_was_not(tmp_path):
    """Rungs at 200, 600 and 1800 steps (so that a kill lands mid-run): a stopped run continued
    with --continue-stopped and SIGKILLed on the way ends with the record of one continued
    without a kill, but for timings and resumes."""
    import shutil

    args = ["--steps", "1800", *ARGS[2:], "--audit", "0"]
    (tmp_path / "a").mkdir()
    write_configs(tmp_path / "a", configs_of(9))
    proc = script("training_01_all.py", "--workers", "2", *args, "--pack", "1", cwd=tmp_path / "a", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    chosen = paused_of(tmp_path / "a")[0]
    for side in ("a", "b"):
        ResultsFolder(tmp_path / side / "results_01_all").result(chosen).replace(
            ResultsFolder(tmp_path / side / "results_01_all").old_stopped(chosen))
    straight_run = script("training_01_all.py", "--workers", "1", *args, "--pack", "1", cwd=tmp_path / "a", timeout=600)
    assert straight_run.returncode == 0
    from helpers import progress_step, wait_for

    worker = start_worker(*args, "--pack", "1", cwd=tmp_path / "b")
    wait_for(lambda: progress_step(tmp_path / "b") >= 400, what="the continued run past step 400")
    kill(worker)
    assert chosen not in results(tmp_path / "b")
    again = script("training_01_all.py", "--workers", "1", *args, "--pack", "1", cwd=tmp_path / "b", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    mine, theirs = results(tmp_path / "b")[chosen], results(tmp_path / "a")[chosen]
    assert mine["resumes"] == theirs["resumes"] + 1
    assert comparable(mine) == comparable(theirs) and mine["continued"] is True
