"""The sweep on a real Slurm cluster, through submitit (issue 6).

These tests need a running Slurm with accounting; .ci/run starts a single-node one with
.ci/slurm/start.sh. Elsewhere they skip, saying how to run them.
"""

import json
import shutil
import subprocess
import sys

import pytest

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.spec.grid import default_grid
from helpers import ROOT, claims, env, progress_step, results, script, wait_for, write_configs

# one Slurm test at a time (the single-node cluster has 2 CPUs): one xdist worker runs them all
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return False
    try:
        import submitit  # noqa: F401
    except ImportError:
        return False
    ok = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    acct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, text=True, timeout=20)
    return ok.returncode == 0 and any(s in ok.stdout for s in ("idle", "mix", "alloc")) and acct.returncode == 0


if not _slurm_up():
    pytest.skip("no running Slurm with accounting (and submitit) here: start a single-node cluster with "
                "'sudo bash .ci/slurm/start.sh' (Debian; installs slurm, munge, mariadb), then rerun",
                allow_module_level=True)

# --pack 1: each task's log says "finished" once per configuration (packs are tested in test_packed.py)
SWEEP = ["--steps", "150", "--batch-size", "8", "--history", "50", "--device", "cpu",
         "--checkpoint-every", "50", "--val-streams", "8", "--pack", "1"]
LONG = RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=16)
LONG_SETTINGS = TrainSettings(steps=100_000, batch_size=8, history=50, device="cpu", checkpoint_every=500,
                              log_every=50, eval_every=10_000, val_streams=8)
LONG_ARGS = ["--steps", "100000", "--batch-size", "8", "--history", "50", "--device", "cpu",
             "--checkpoint-every", "500", "--log-every", "50", "--eval-every", "10000", "--val-streams", "8"]


class ReleaseHeldRequeues:
    """Slurm holds a requeued job for about two minutes (its begin time); the test lets it start
    after 10 s instead, so that the suite stays short, with a 10-minute limit so that it is not
    signalled again. The requeue and the resume themselves are Slurm's and submitit's."""

    def __enter__(self):
        import threading

        self.stop = threading.Event()

        def loop():
            released = set()  # each requeue once: its start time is set, not pushed back again
            while not self.stop.wait(1.0):
                out = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True)
                for line in out.stdout.splitlines():
                    job, _, reason = line.partition(" ")
                    if "BeginTime" in reason and job not in released:
                        # not at once: a requeued job started while its previous instance is still
                        # being cleaned up is killed ("Job credential revoked"); Slurm's own hold is
                        # there for that, this only shortens it. The requeued instance gets a longer
                        # limit: with the test's 1-minute one, its own signal can come before
                        # submitit has installed its handler, which kills it (exit 140)
                        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+10", "TimeLimit=10"],
                                       capture_output=True)
                        released.add(job)
                pending = {ln.partition(" ")[0] for ln in out.stdout.splitlines()}
                released &= pending  # a job requeued again later is released again

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def slurm_logs(tmp_path):
    return "\n".join(p.read_text(errors="replace") for p in (tmp_path / "results_01_all/.queue/slurm").rglob("*.out"))


def test_a_small_sweep_with_two_slurm_workers_completes_each_configuration_once(tmp_path):
    configs = default_grid(state_sizes=[8], layers=[1])[:8]
    write_configs(tmp_path, configs)
    proc = script("training_01_all.py", "--slurm", "--workers", "2", "--wait", "--time-minutes", "10",
                  *SWEEP, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted Slurm job array" in proc.stdout
    done = results(tmp_path)
    assert set(done) == {c.id for c in configs} and {r["status"] for r in done.values()} == {"done"}
    assert claims(tmp_path) == []
    workers = {r["worker"] for r in done.values()}
    assert all("-slurm" in w for w in workers)
    # each configuration was finished by exactly one task
    finished = [line for line in slurm_logs(tmp_path).splitlines() if "] finished " in line]
    assert len(finished) == len(configs)


def test_successive_halving_under_slurm_stops_and_promotes_as_locally(tmp_path):
    """Issue 32: ``--halving`` under ``--slurm``: two array tasks share the rungs; the promotions
    are those a local halving sweep of the same configurations makes."""
    configs = default_grid(state_sizes=[8], layers=[1])[:9]
    halving = ["--steps", "90", "--halving", "3", "--eval-every", "0", "--checkpoint-every", "10"]
    local = tmp_path / "local"
    for d in (tmp_path, local):
        d.mkdir(exist_ok=True)
        write_configs(d, configs)
    proc = script("training_01_all.py", "--slurm", "--workers", "2", "--wait", "--time-minutes", "10",
                  *SWEEP, *halving, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    here = script("training_01_all.py", "--workers", "1", *SWEEP, *halving, cwd=local, timeout=600)
    assert here.returncode == 0, here.stdout + here.stderr
    done, expected = results(tmp_path), results(local)
    assert {cid: (r["rung"], r["training steps"]) for cid, r in done.items()} == \
        {cid: (r["rung"], r["training steps"]) for cid, r in expected.items()}
    # rung 1: 3 promoted, 4 of the 6 stopped audited (two per stratum); rung 2: 1 promoted, both
    # stopped audited: 2 end paused at rung 1, the other 7 at the end
    assert sorted(r["rung"] for r in done.values()) == [1] * 2 + [3] * 7
    for k in (1, 2):
        ours = json.loads((tmp_path / f"results_01_all/.queue/promotions/{k}.json").read_text())
        theirs = json.loads((local / f"results_01_all/.queue/promotions/{k}.json").read_text())
        assert ours["promoted"] == theirs["promoted"] and ours["audited"] == theirs["audited"]


def start_uninterrupted(tmp_path):
    """The same run never interrupted, trained in a process of its own beside the Slurm job."""
    code = ("import json, sys, torch; torch.set_num_threads(1)\n"
            "from gatedrnn import RNNConfig, TrainSettings, train\n"
            "r = train(RNNConfig.from_dict(json.loads(sys.argv[1])), TrainSettings.from_dict(json.loads(sys.argv[2])))\n"
            "open(sys.argv[3], 'w').write(json.dumps(r))")
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(LONG.to_dict()),
                             json.dumps(LONG_SETTINGS.to_dict()), str(tmp_path / "uninterrupted.json")], env=env())


def test_a_task_past_its_time_limit_is_requeued_and_resumes_identically(tmp_path):
    write_configs(tmp_path, [LONG])
    baseline = start_uninterrupted(tmp_path)
    # Slurm may send the time-limit signal up to a minute before it is due, so a 1-minute limit
    # can signal a task before its worker has claimed anything (nothing to checkpoint: the
    # requeued task starts afresh). The task starts with a 10-minute limit; once its run is
    # training, the limit is cut to 1 minute, so that the task is past the point of its signal
    # (55 s before the limit) and slurmctld sends it at its next timer check, about 30 s later:
    # mid-run, since the run takes about 55 s on one core
    out = open(tmp_path / "launcher.log", "w")
    with ReleaseHeldRequeues():
        launcher = subprocess.Popen([sys.executable, str(ROOT / "training_01_all.py"), "--slurm", "--workers", "1",
                                     "--wait", "--time-minutes", "10", "--signal-delay-seconds", "55", *LONG_ARGS],
                                    cwd=tmp_path, env=env(), stdout=out, stderr=subprocess.STDOUT, text=True)
        array = wait_for(lambda: _submitted_array((tmp_path / "launcher.log").read_text()), timeout=120,
                         what="the submission")
        wait_for(lambda: progress_step(tmp_path) > 0, timeout=300, what="the run to be training")
        subprocess.run(["scontrol", "update", f"JobId={array}", "TimeLimit=1"], check=True, capture_output=True)
        code = launcher.wait(timeout=600)
    out.close()
    logs = slurm_logs(tmp_path)
    assert code == 0, (tmp_path / "launcher.log").read_text() + logs
    assert baseline.wait(timeout=600) == 0
    uninterrupted = json.loads((tmp_path / "uninterrupted.json").read_text())
    res = results(tmp_path)[LONG.id]
    assert "checkpointing and requeueing" in logs
    assert res["resumes"] >= 1
    assert res["loss"] == uninterrupted["loss"] and res["val loss"] == uninterrupted["val loss"]
    assert res["final weights sha256"] == uninterrupted["final weights sha256"]


def _submitted_array(text):
    """The job array's id in the launcher's output, or None before it is submitted."""
    return text.split("submitted Slurm job array ")[1].split()[0] if "submitted Slurm job array " in text else None


def test_scancel_mid_sweep_then_a_local_rerun_finishes(tmp_path):
    configs = [LONG, RNNConfig(**{**LONG.to_dict(), "state_size": 12})]
    write_configs(tmp_path, configs)
    # long enough to be cancelled mid-run (about 15 s on one core), short enough that the local
    # rerun does not train for a minute
    args = ["--steps", "30000", *LONG_ARGS[2:]]
    proc = script("training_01_all.py", "--slurm", "--workers", "2", "--time-minutes", "10", *args,
                  cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    array = _submitted_array(proc.stdout)
    wait_for(lambda: len(claims(tmp_path)) == 2 and all((c.get("progress") or {}).get("step", 0) > 0
                                                        for c in claims(tmp_path)), timeout=180,
             what="two running Slurm workers")
    subprocess.run(["scancel", array], check=True)
    wait_for(lambda: claims(tmp_path) == [], timeout=120, what="the claims to be released")
    assert results(tmp_path) == {}
    assert len(list((tmp_path / "results_01_all/checkpoints").glob("*.pt"))) == 2
    # the array is gone: a local rerun resumes both from their checkpoints
    rerun = script("training_01_all.py", "--workers", "2", *args, cwd=tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert {r["resumes"] for r in results(tmp_path).values()} == {1}
