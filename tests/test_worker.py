"""The sweep with real worker processes and real signals (DESIGN.md: claims, leases, resume)."""

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.spec.grid import default_grid
from helpers import (ROOT, TINY_ARGS, claims, env, kill, progress_step, results, script, start_worker,
                     wait_for, worker_options, write_configs)

pytestmark = pytest.mark.slow

# one run long enough to be interrupted mid-way (a few seconds on one core)
LONG = RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=16)
LONG_ARGS = ["--steps", "2500", "--batch-size", "8", "--history", "50", "--device", "cpu",
             "--checkpoint-every", "100", "--log-every", "50", "--eval-every", "1000",
             "--val-streams", "8", "--threads", "1"]
LONG_SETTINGS = TrainSettings(steps=2500, batch_size=8, history=50, device="cpu", checkpoint_every=100,
                              log_every=50, eval_every=1000, val_streams=8)


@pytest.fixture(scope="module")
def uninterrupted():
    import torch

    torch.set_num_threads(1)
    return train(LONG, LONG_SETTINGS)


# the SIGKILL test kills at a random step chosen in KILL_AT, and needs the run to go on well past it
# whatever the machine's speed (a CPU trains LONG at ~5000 steps/s, so 2500 steps leave under a second)
KILL_STEPS, KILL_AT = 8000, (100, 2000)
KILL_ARGS = [str(KILL_STEPS) if a == "2500" else a for a in LONG_ARGS]


@pytest.fixture(scope="module")
def uninterrupted_long():
    import torch

    torch.set_num_threads(1)
    return train(LONG, dataclasses.replace(LONG_SETTINGS, steps=KILL_STEPS))


def finished_lines(logs):
    counts = {}
    for text in logs:
        for cid in re.findall(r"finished .* ([0-9a-f]{12}):", text):
            counts[cid] = counts.get(cid, 0) + 1
    return counts


def test_many_workers_complete_every_configuration_exactly_once(tmp_path):
    configs = default_grid(state_sizes=[8], layers=[1])[:24]
    write_configs(tmp_path, configs)
    proc = script("training_01_all.py", "--workers", "4", *TINY_ARGS, "--steps", "60", "--lock", "file",
                  cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = results(tmp_path)
    assert set(done) == {c.id for c in configs}
    assert all(r["status"] == "done" and r["training steps"] == 60 for r in done.values())
    assert claims(tmp_path) == []
    logs = [p.read_text() for p in (tmp_path / "results_01_all/.queue/logs").glob("*.log")]
    assert len(logs) == 4
    counts = finished_lines(logs)
    assert len(counts) == 24 and set(counts.values()) == {1}
    assert len({r["worker"] for r in done.values()}) > 1  # the work really was shared
    assert "done 24" in proc.stdout


def test_sigkill_mid_run_then_a_new_worker_resumes_identically(tmp_path, uninterrupted_long):
    uninterrupted = uninterrupted_long
    write_configs(tmp_path, [LONG])
    w = start_worker(*KILL_ARGS, cwd=tmp_path, name="victim")
    ckpt = tmp_path / "results_01_all/checkpoints" / f"{LONG.id}.pt"
    target = random.randrange(*KILL_AT)  # a random step, well before the run's end
    wait_for(lambda: ckpt.exists() and progress_step(tmp_path) >= target, interval=0.01, what=f"step {target}")
    assert kill(w, signal.SIGKILL) == -signal.SIGKILL
    assert results(tmp_path) == {}, f"the victim finished before the kill at step {target}"
    assert len(claims(tmp_path)) == 1  # left behind by the dead worker
    w2 = start_worker(*KILL_ARGS, cwd=tmp_path, name="heir")
    assert w2.wait(timeout=300) == 0
    res = results(tmp_path)[LONG.id]
    assert res["worker"] == "heir" and res["resumes"] == 1
    assert res["loss"] == uninterrupted["loss"]
    assert res["val loss"] == uninterrupted["val loss"] and res["val curve"] == uninterrupted["val curve"]
    assert res["final weights sha256"] == uninterrupted["final weights sha256"]
    assert claims(tmp_path) == [] and not ckpt.exists()
    assert "took over from stale claim of victim" in (tmp_path / "heir.log").read_text()


def test_sigterm_checkpoints_releases_and_another_worker_resumes(tmp_path, uninterrupted):
    write_configs(tmp_path, [LONG])
    w = start_worker(*LONG_ARGS, cwd=tmp_path, name="first")
    wait_for(lambda: progress_step(tmp_path) >= 200, what="training progress")
    assert kill(w, signal.SIGTERM) == 3  # stopped with work left
    ckpt = tmp_path / "results_01_all/checkpoints" / f"{LONG.id}.pt"
    assert ckpt.exists() and claims(tmp_path) == [] and results(tmp_path) == {}
    assert "SIGTERM: checkpointed" in (tmp_path / "first.log").read_text()
    w2 = start_worker(*LONG_ARGS, cwd=tmp_path, name="second")
    assert w2.wait(timeout=300) == 0
    res = results(tmp_path)[LONG.id]
    assert res["resumes"] == 1 and res["worker"] == "second"
    assert res["loss"] == uninterrupted["loss"] and res["val loss"] == uninterrupted["val loss"]
    assert "took over" not in (tmp_path / "second.log").read_text()  # the claim was released, not stale


def test_a_worker_whose_claim_was_taken_over_writes_no_result(tmp_path):
    write_configs(tmp_path, [LONG])
    lease = ["--lease-seconds", "2"]
    a = start_worker(*LONG_ARGS, *lease, cwd=tmp_path, name="paused")
    wait_for(lambda: progress_step(tmp_path) >= 100, what="training progress")
    a.send_signal(signal.SIGSTOP)  # a laptop lid closed, a stuck NFS mount...
    try:
        time.sleep(2.5)  # the lease expires; the pid is alive, so only the lease can free it
        b = start_worker(*LONG_ARGS, *lease, cwd=tmp_path, name="taker")
        wait_for(lambda: claims(tmp_path) and claims(tmp_path)[0]["worker"] == "taker", what="the takeover")
    finally:
        a.send_signal(signal.SIGCONT)
    assert b.wait(timeout=300) == 0
    assert a.wait(timeout=120) == 0
    res = results(tmp_path)
    assert list(res) == [LONG.id] and res[LONG.id]["worker"] == "taker"
    assert "lost the claim" in (tmp_path / "paused.log").read_text()
    assert claims(tmp_path) == []


def test_init_while_workers_run_loses_nothing_and_keeps_ids(tmp_path):
    script("init_experiments.py", "--layers", "1", "--state-sizes", "8", cwd=tmp_path, check=True)
    first = json.loads((tmp_path / "rnn_configs.json").read_text())
    tiny = [*TINY_ARGS, "--steps", "20", "--history", "10", "--batch-size", "4", "--val-streams", "2"]
    workers = [start_worker(*tiny, cwd=tmp_path, name=f"w{k}") for k in range(2)]
    inits = [subprocess.Popen([sys.executable, str(ROOT / "init_experiments.py"), "--state-sizes", "8", "--layers", *ls],
                              cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for ls in (["1", "2"], ["1", "3"], ["1", "2", "3"])]
    assert [p.wait(timeout=120) for p in inits] == [0, 0, 0]
    final = json.loads((tmp_path / "rnn_configs.json").read_text())
    assert final[: len(first)] == first  # nothing reordered or dropped
    assert len(final) == 3 * len(first) and len({e["id"] for e in final}) == len(final)
    assert all(RNNConfig.from_dict(e).id == e["id"] for e in final)
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    # workers finished before the file grew: a rerun picks the rest up
    rerun = script("training_01_all.py", "--workers", "2", *tiny, cwd=tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert set(results(tmp_path)) == {e["id"] for e in final}


def test_an_exception_is_retried_then_recorded_as_failed(tmp_path):
    write_configs(tmp_path, [LONG])
    # a real exception inside every run, injected into the worker process at start-up
    boom = tmp_path / "sitecustomize.py"
    boom.write_text("import gatedrnn.training.trainer as t\n"
                    "def bad(self, *a, **k):\n    raise FloatingPointError('injected fault')\n"
                    "t.Run.train_steps = bad\n")
    e = env()
    e["PYTHONPATH"] = str(tmp_path) + os.pathsep + e["PYTHONPATH"]
    proc = subprocess.run([sys.executable, "-m", "gatedrnn.running.worker"],
                          input=worker_options(*LONG_ARGS, "--retry-delay", "0.05"),
                          cwd=tmp_path, env=e, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = results(tmp_path)[LONG.id]
    assert res["status"] == "failed" and res["attempts"] == 3
    assert res["error"] == "FloatingPointError: injected fault" and "Traceback" in res["traceback"]
    assert proc.stdout.count("will be retried") == 2 and "recorded as failed" in proc.stdout
    status = script("training_01_all.py", *LONG_ARGS, cwd=tmp_path)
    assert status.returncode == 1  # everything finished, something failed


@pytest.mark.parametrize("damage", [b"PK\x03\x04 truncated zip", b""], ids=["truncated", "empty"])
def test_a_corrupt_checkpoint_is_reported_and_the_run_restarts(tmp_path, damage):
    write_configs(tmp_path, [LONG])
    ckpt = tmp_path / "results_01_all/checkpoints" / f"{LONG.id}.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(damage)
    proc = script("training_01_all.py", *TINY_ARGS, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = results(tmp_path)[LONG.id]
    assert res["status"] == "done" and res["resumes"] == 0
    assert "unreadable checkpoint" in res["checkpoint problems"][0]
    assert ckpt.with_name(ckpt.name + ".corrupt").read_bytes() == damage  # kept aside, not lost
    log = next((tmp_path / "results_01_all/.queue/logs").glob("*.log")).read_text()
    assert "unreadable checkpoint" in log


@pytest.mark.parametrize("setup, args, words", [
    (lambda d: (d / "rnn_configs.json").write_text("[{"), [], "rnn_configs.json: invalid JSON"),
    (lambda d: (d / "rnn_configs.json").write_text('[{"use_input_gate": 1}]'), [], "rnn_configs.json: entry 0"),
    (lambda d: None, ["--results-dir", "rnn_configs.json"], "rnn_configs.json: the results folder is not a directory"),
    (lambda d: None, ["--results-dir", "nowhere"], "nowhere: no such results folder"),
    (lambda d: None, ["--data", "missing.txt"], "missing.txt: no such corpus file"),
    (lambda d: (d / "short.txt").write_text("abc"), ["--data", "short.txt"], "too short"),
    (lambda d: None, ["--steps", "0"], "steps must be >= 1"),
    (lambda d: None, ["--device", "tpu"], "device must be"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, setup, args, words):
    write_configs(tmp_path, [LONG])
    setup(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = script("training_01_all.py", *TINY_ARGS, *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p in before}
    assert after == before  # nothing already written was touched


def test_resuming_with_other_settings_is_refused(tmp_path):
    write_configs(tmp_path, [LONG])
    w = start_worker(*LONG_ARGS, cwd=tmp_path, name="first")
    wait_for(lambda: progress_step(tmp_path) >= 150, what="training progress")
    kill(w, signal.SIGTERM)
    proc = script("training_01_all.py", *LONG_ARGS, "--batch-size", "16", cwd=tmp_path)
    assert proc.returncode == 2
    assert "batch_size=8" in proc.stderr and "batch_size=16" in proc.stderr
    assert claims(tmp_path) == []  # the refusing worker gave its claim back


def test_slurm_options_are_checked_before_anything_is_submitted(tmp_path):
    write_configs(tmp_path, [LONG])
    proc = script("training_01_all.py", "--slurm", "--slurm-extra", "account", *TINY_ARGS, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --slurm-extra expects KEY=VALUE, got 'account'"
    assert not (tmp_path / "results_01_all/.queue/slurm").exists()


def test_the_heartbeat_beats_while_inside_and_stops_on_leaving(tmp_path):
    from types import SimpleNamespace

    from gatedrnn.store.queue import Queue
    from gatedrnn.running.worker import ClaimLost, Heartbeat

    (tmp_path / "r").mkdir()
    q = Queue(tmp_path / "r")
    claim = q.claim([LONG.to_dict(with_id=True)], "w")
    run = SimpleNamespace(step=3, settings=LONG_SETTINGS, curve=[2.5], train_seconds=1.5, resumes=0)
    with Heartbeat(q, [claim], 0.05) as hb:
        hb.update(run)
        wait_for(lambda: (q.folder.read_claim(claim.id)["progress"] or {}).get("step") == 3, what="a beat")
        assert q.folder.read_claim(claim.id)["progress"]["steps per second"] == 2.0
    after = q.folder.read_claim(claim.id)["heartbeat"]
    time.sleep(0.3)
    assert q.folder.read_claim(claim.id)["heartbeat"] == after  # no beat once outside
    q.release(claim)
    with pytest.raises(ClaimLost):
        hb.verify()
