"""A fault is not a verdict (issue 11): what a results folder can contain, what the machine can
do, and what a user can get wrong, with real processes, real signals and real files. Each case
asserts the exit status, the one-line message, and that what was written before is intact."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.store.folder import result_record
from gatedrnn.spec.grid import default_grid
from gatedrnn.training.trainer import train_pack
from helpers import ROOT, claims, env, results, script, start_worker, wait_for, write_configs

pytestmark = pytest.mark.slow

A = RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=16)
B = RNNConfig(True, False, False, False, True, True, True, n_layers=1, state_size=16)
ARGS = ["--steps", "300", "--batch-size", "8", "--history", "50", "--device", "cpu", "--threads", "1",
        "--checkpoint-every", "100", "--val-streams", "8", "--eval-every", "0", "--pack", "1"]
SETTINGS = TrainSettings(steps=300, batch_size=8, history=50, device="cpu", checkpoint_every=100, val_streams=8,
                         eval_every=0)
LONG_ARGS = [*ARGS[:1], "3000", *ARGS[2:]]
FAST_FAULTS = ["--fault-retries", "1", "--fault-backoff", "0.1", "--retry-delay", "0.1"]


@pytest.fixture(scope="module")
def straight():
    """Uninterrupted results of A and B under ARGS."""
    torch.set_num_threads(1)
    return {c.id: train(c, SETTINGS) for c in (A, B)}


def same_run(got, want):
    assert got["status"] == "done"
    assert got["loss"] == want["loss"] and got["val loss"] == want["val loss"]
    assert got["final weights sha256"] == want["final weights sha256"]


def snapshot(folder: Path) -> dict:
    """Every file that a later command must leave as it was (logs and the lock's holder note
    change by design)."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and ".queue/logs" not in str(p) and p.name not in ("lock.holder", "lock")}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def run_injected(tmp_path, code: str, *args, timeout=300):
    """training_01_all.py with ``code`` run first in every process (a sitecustomize module)."""
    (tmp_path / "inject").mkdir(exist_ok=True)
    (tmp_path / "inject/sitecustomize.py").write_text(code)
    e = env()
    e["PYTHONPATH"] = str(tmp_path / "inject") + os.pathsep + e["PYTHONPATH"]
    return subprocess.run([sys.executable, str(ROOT / "training_01_all.py"), *args], cwd=tmp_path, env=e,
                          capture_output=True, text=True, timeout=timeout)


def logs(tmp_path) -> str:
    return "\n".join(p.read_text() for p in (tmp_path / "results_01_all/.queue/logs").glob("*.log"))


# ---------------------------------------------------------------- 1. claim records of the wrong shape
@pytest.mark.parametrize("damage", [
    lambda c: {**c, "lease": None},           # what --lease-seconds inf once wrote
    lambda c: {**c, "heartbeat": "abc"},
    lambda c: {k: v for k, v in c.items() if k != "id"},
])
def test_a_damaged_claim_neither_locks_the_sweep_nor_crashes_a_command(tmp_path, straight, damage):
    write_configs(tmp_path, [A, B])
    path = tmp_path / "results_01_all/.queue/claims" / f"{A.id}.json"
    path.parent.mkdir(parents=True)
    claim = {"id": A.id, "worker": "ghost", "host": "elsewhere", "pid": 1, "token": "t", "claimed": time.time(),
             "heartbeat": time.time(), "lease": 120.0, "attempt": 1, "progress": {}}
    text = json.dumps(damage(claim))
    path.write_text(text)
    status = script("examine_results_01_all.py", "--out", "plots", "--config-file", "rnn_configs.json", cwd=tmp_path)
    assert status.returncode == 0 and "pending 2" in status.stdout, status.stderr
    proc = script("training_01_all.py", *ARGS, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = results(tmp_path)
    same_run(done[A.id], straight[A.id])
    same_run(done[B.id], straight[B.id])
    assert (path.parent / f"{A.id}.json.corrupt").read_text() == text  # kept, not lost
    assert logs(tmp_path).count(f"{path}: a damaged claim record") == 1
    assert claims(tmp_path) == []


def test_an_infinite_lease_is_refused_at_the_boundary(tmp_path):
    write_configs(tmp_path, [A])
    before = snapshot(tmp_path)
    proc = script("training_01_all.py", *ARGS, "--lease-seconds", "inf", cwd=tmp_path)
    assert proc.returncode == 2 and "--lease-seconds: must be a finite number" in one_line(proc.stderr)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- 2. the machine's faults
@pytest.mark.parametrize("args, words", [
    (["--device", "mps"], "no usable MPS device"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "CUDA device"),
    (["--seed", "1e20"], "--seed: invalid int value: '1e20'"),
    (["--seed", str(10**20)], "seed must be at most 2**62"),
    (["--batch-size", "100000000"], "one window of data needs"),
])
def test_settings_this_machine_cannot_run_are_refused_before_anything_is_claimed(tmp_path, args, words):
    write_configs(tmp_path, [A])
    before = snapshot(tmp_path)
    proc = script("training_01_all.py", *ARGS, *args, cwd=tmp_path)
    assert proc.returncode == 2 and words in one_line(proc.stderr), proc.stderr
    assert snapshot(tmp_path) == before and results(tmp_path) == {}


INJECT_ENOSPC = """
import errno, os
import gatedrnn.spec.atomic as a
real = a.atomic_write_bytes
def full(path, data):
    if str(path).endswith(".pt"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real(path, data)
a.atomic_write_bytes = full
import gatedrnn.training.checkpoints as c
c.atomic_write_bytes = full
"""


def test_a_full_disk_is_a_fault_not_a_failure_and_a_rerun_finishes(tmp_path, straight):
    write_configs(tmp_path, [A, B])
    proc = run_injected(tmp_path, INJECT_ENOSPC, *ARGS, *FAST_FAULTS)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # work left
    assert "fault of the machine, not of a configuration: ENOSPC" in proc.stderr
    assert results(tmp_path) == {} and claims(tmp_path) == []
    assert not list((tmp_path / "results_01_all/.queue/attempts").glob("*.json"))  # nothing counted as failed
    assert "nothing recorded against the configuration" in logs(tmp_path)
    rerun = script("training_01_all.py", *ARGS, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    same_run(results(tmp_path)[A.id], straight[A.id])
    same_run(results(tmp_path)[B.id], straight[B.id])


def _mount_tmpfs(where: Path, size: str) -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_really_full_disk_mid_run_then_space_freed_finishes_identically(tmp_path, straight):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux): the full-disk test is "
                    "covered by the injected ENOSPC test only")
    try:
        long_settings = SETTINGS.replace(steps=3000)
        want = train(A, long_settings)
        write_configs(disk, [A])
        worker = subprocess.Popen([sys.executable, str(ROOT / "training_01_all.py"), *LONG_ARGS, *FAST_FAULTS,
                                   "--fault-backoff", "0.5"], cwd=disk, env=env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        ckpt = disk / "results_01_all/checkpoints" / f"{A.id}.pt"
        wait_for(ckpt.exists, what="a first checkpoint")
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk to the last byte
        try:
            for chunk in (65536, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 3, out + err
        assert "fault of the machine" in err and "ENOSPC" in err
        assert results(disk) == {} and ckpt.exists()  # the last good checkpoint is still there
        (disk / "filler").unlink()
        rerun = script("training_01_all.py", *LONG_ARGS, cwd=disk)
        assert rerun.returncode == 0, rerun.stderr
        got = results(disk)[A.id]
        assert got["status"] == "done" and got["resumes"] >= 1
        assert got["loss"] == want["loss"] and got["final weights sha256"] == want["final weights sha256"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ---------------------------------------------------------------- 3. an empty checkpoint
# tests/test_worker.py::test_a_corrupt_checkpoint_is_reported_and_the_run_restarts[empty]


# ---------------------------------------------------------------- 4. other settings in the same folder
def test_a_launcher_with_other_settings_is_refused(tmp_path):
    write_configs(tmp_path, [A, B])
    first = script("training_01_all.py", *ARGS, "--max-runs", "1", cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    before = snapshot(tmp_path)
    other = script("training_01_all.py", *ARGS, "--steps", "400", cwd=tmp_path)
    line = one_line(other.stderr)
    assert other.returncode == 2 and "steps=300" in line and "steps=400" in line and "--results-dir" in line
    assert snapshot(tmp_path) == before
    again = script("training_01_all.py", *ARGS, cwd=tmp_path)  # the recorded settings still work
    assert again.returncode == 0 and len(results(tmp_path)) == 2


# ---------------------------------------------------------------- 5. a broken configuration file mid-sweep
def test_a_configuration_file_broken_mid_sweep_stops_the_sweep_cleanly(tmp_path):
    write_configs(tmp_path, [A, B])
    very_long = [*ARGS[:1], "100000", *ARGS[2:]]
    launcher = subprocess.Popen([sys.executable, str(ROOT / "training_01_all.py"), "--workers", "2", *very_long],
                                cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(claims(tmp_path)) == 2 and all((c.get("progress") or {}).get("step", 0) > 0
                                                        for c in claims(tmp_path)), what="two running workers")
    (tmp_path / "rnn_configs.json").write_text("[{")
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 2, out + err
    line = one_line(err)
    assert "rnn_configs.json: invalid JSON" in line and "stopping the workers" in line
    assert claims(tmp_path) == [] and results(tmp_path) == {}
    assert len(list((tmp_path / "results_01_all/checkpoints").glob("*.pt"))) == 2
    assert logs(tmp_path).count("SIGTERM: checkpointed") == 2


# ---------------------------------------------------------------- 6. a worker that crashes is not silent
def test_a_worker_crash_is_reported_with_its_reason_and_last_lines(tmp_path, straight):
    write_configs(tmp_path, [A])
    proc = run_injected(tmp_path, "import gatedrnn.store.queue as q\n"
                                  "def boom(self, claim, result):\n    raise KeyError('injected crash')\n"
                                  "q.Queue.complete = boom\n", *ARGS)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "died: KeyError: 'injected crash'; last lines of" in proc.stderr
    assert "raise KeyError('injected crash')" in proc.stderr  # the log's last lines come along
    assert results(tmp_path) == {}
    rerun = script("training_01_all.py", *ARGS, cwd=tmp_path)  # the dead worker's claim is stale at once
    assert rerun.returncode == 0
    same_run(results(tmp_path)[A.id], straight[A.id])


def test_a_folder_where_the_lock_belongs_is_one_line_and_exit_2(tmp_path):
    write_configs(tmp_path, [A])
    (tmp_path / "results_01_all/.queue/lock").mkdir(parents=True)
    proc = script("training_01_all.py", *ARGS, cwd=tmp_path)
    assert proc.returncode == 2 and "cannot take the queue lock (Is a directory)" in one_line(proc.stderr)


# ---------------------------------------------------------------- 7. file modes
def test_files_honour_the_umask_and_a_rewritten_file_keeps_its_mode(tmp_path):
    e = env()
    umask = "umask 022; "
    cmd = f"{umask}{sys.executable} {ROOT / 'init_experiments.py'} --layers 1 --state-sizes 16"
    assert subprocess.run(cmd, shell=True, cwd=tmp_path, env=e).returncode == 0
    configs = tmp_path / "rnn_configs.json"
    assert configs.stat().st_mode & 0o777 == 0o644
    entries = json.loads(configs.read_text())
    configs.write_text(json.dumps(entries[:2]))
    assert subprocess.run(f"{umask}{sys.executable} {ROOT / 'training_01_all.py'} " + " ".join(ARGS),
                          shell=True, cwd=tmp_path, env=e).returncode == 0
    for path in (tmp_path / "results_01_all").glob("*.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    configs.write_text(json.dumps(entries[:1]))
    configs.chmod(0o640)
    assert subprocess.run(cmd, shell=True, cwd=tmp_path, env=e).returncode == 0  # appends to it
    assert configs.stat().st_mode & 0o777 == 0o640 and len(json.loads(configs.read_text())) == len(entries)


# ---------------------------------------------------------------- 8. a damaged result file
def test_a_damaged_result_is_set_aside_and_trained_again(tmp_path, straight):
    write_configs(tmp_path, [A])
    path = tmp_path / "results_01_all" / f"{A.id}.json"
    path.write_text('{"status": "done", "loss": [2.1, 1.9')
    status = script("examine_results_01_all.py", "--out", "plots", "--config-file", "rnn_configs.json", cwd=tmp_path)
    assert status.returncode == 0 and "pending 1" in status.stdout and "not valid JSON" in status.stdout
    proc = script("training_01_all.py", *ARGS, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    same_run(results(tmp_path)[A.id], straight[A.id])
    assert (path.parent / f"{A.id}.json.corrupt").read_text() == '{"status": "done", "loss": [2.1, 1.9'
    assert f"{path}: a damaged result" in logs(tmp_path)


# ---------------------------------------------------------------- 9. the analysis
def test_the_analysis_refuses_a_file_as_out_and_names_a_bad_record(tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    good = []
    for i, cfg in enumerate(default_grid(state_sizes=[8], layers=[1])[:4]):
        rec = result_record(cfg.to_dict(with_id=True), "done", {"loss": [2.5, 2.0 + i / 10], "min loss": 2.0 + i / 10,
                                                                 "log every": 50, "val loss": 2.1 + i / 10})
        (folder / f"{rec['id']}.json").write_text(json.dumps(rec))
        good.append(rec)
    bad = dict(good[0], **{"log every": "abc"})
    (folder / f"{bad['id']}.json").write_text(json.dumps(bad))
    (tmp_path / "taken").write_text("not a folder")
    proc = script("examine_results_01_all.py", "--results-dir", "res", "--out", "taken", cwd=tmp_path)
    assert proc.returncode == 2 and "--out taken: exists and is not a folder" in one_line(proc.stderr)
    assert (tmp_path / "taken").read_text() == "not a folder"
    proc = script("examine_results_01_all.py", "--results-dir", "res", "--out", "plots", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{bad['id']}.json: skipped, 'log every' is not a number ('abc')" in proc.stdout
    assert "3 result files" in proc.stdout or "status:" in proc.stdout


# ---------------------------------------------------------------- 10. a diverged run
def test_a_diverged_run_is_never_best_nor_below_the_threshold(tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    cfgs = default_grid(state_sizes=[8], layers=[1])[:3]
    for cfg, (status, low) in zip(cfgs, [("diverged", 0.5), ("done", 1.8), ("done", 2.2)]):
        fields = {"loss": [3.0, low], "min loss": low, "log every": 50}
        if status == "diverged":
            fields["diverged at step"] = 100
        rec = result_record(cfg.to_dict(with_id=True), status, fields)
        (folder / f"{rec['id']}.json").write_text(json.dumps(rec))
    proc = script("examine_results_01_all.py", "--results-dir", "res", "--out", "plots", "--threshold", "2.0",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    best = next(ln for ln in proc.stdout.splitlines() if ln.startswith("best:"))
    assert cfgs[1].id in best and "1.8000" in best
    assert "runs below 2: 1" in proc.stdout
    md = (tmp_path / "plots/summary.md").read_text()
    assert "## Diverged runs: 1" in md and cfgs[0].id[:12] in md.split("## Diverged runs")[1]


# ---------------------------------------------------------------- --retry-failed
def test_retry_failed_runs_failed_configurations_again_keeping_the_old_record(tmp_path, straight):
    write_configs(tmp_path, [A])
    proc = run_injected(tmp_path, "import gatedrnn.training.trainer as t\n"
                                  "def bad(self, *a, **k):\n    raise FloatingPointError('injected fault')\n"
                                  "t.Run.train_steps = bad\n", *ARGS, *FAST_FAULTS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = (tmp_path / "results_01_all" / f"{A.id}.json").read_bytes()
    times = [x["time"] for x in json.loads(failed)["errors"]]
    assert len(times) == 3 and times[2] - times[1] >= 0.2 > 0 and times[1] - times[0] >= 0.1  # spread, doubling
    assert script("training_01_all.py", *ARGS, cwd=tmp_path).returncode == 1  # a plain rerun leaves it failed
    proc = script("training_01_all.py", *ARGS, "--retry-failed", cwd=tmp_path)
    assert proc.returncode == 0 and "1 failed configuration(s) pending again" in proc.stdout
    same_run(results(tmp_path)[A.id], straight[A.id])
    assert (tmp_path / "results_01_all" / f"{A.id}.failed-1.json").read_bytes() == failed


# ---------------------------------------------------------------- chaos
@pytest.mark.parametrize("pack", [1, 4])
def test_six_workers_random_sigkills_exactly_one_bit_identical_result_each(tmp_path, pack):
    """Solo (--pack 1) and packed (--pack 4: packs form in file order, so the same three packs
    re-form after every kill, and each resumes from its checkpoint)."""
    configs = default_grid(state_sizes=[8], layers=[1])[:12]
    args = ["--steps", "240", "--batch-size", "4", "--history", "20", "--device", "cpu", "--threads", "1",
            "--checkpoint-every", "20", "--val-streams", "4", "--eval-every", "0", "--pack", str(pack)]
    settings = TrainSettings(steps=240, batch_size=4, history=20, device="cpu", checkpoint_every=20,
                             val_streams=4, eval_every=0)
    torch.set_num_threads(1)
    if pack == 1:
        want = {c.id: train(c, settings) for c in configs}
    else:
        want = {r["id"]: r for k in range(0, 12, pack) for r in train_pack(configs[k:k + pack], settings)}
    write_configs(tmp_path, configs)
    rng = random.Random(11)
    workers = [start_worker(*args, cwd=tmp_path, name=f"w{k}") for k in range(6)]
    kills, spawned = 0, 6
    deadline = time.monotonic() + 240
    while kills < 10 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.6))
        alive = [w for w in workers if w.poll() is None]
        if not alive:
            break
        victim = rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills += 1
        workers.append(start_worker(*args, cwd=tmp_path, name=f"w{spawned}"))
        spawned += 1
    for w in workers:
        w.wait(timeout=300)
    final = script("training_01_all.py", *args, "--workers", "2", cwd=tmp_path, timeout=600)
    assert final.returncode == 0, final.stderr
    assert kills >= 5  # the run was really disturbed
    got = results(tmp_path)
    assert set(got) == {c.id for c in configs}  # exactly one result file per configuration
    for cid, rec in got.items():
        assert rec["loss"] == want[cid]["loss"], cid
        assert rec["final weights sha256"] == want[cid]["final weights sha256"], cid
    assert claims(tmp_path) == []
    assert not list((tmp_path / "results_01_all/checkpoints").glob("*.pt"))
    if pack > 1:
        assert len({rec["pack"]["id"] for rec in got.values()}) == 3
