"""Run the repository's scripts as a user would: real processes, in a temporary folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# one configuration per worker run (--pack 1): these tests are about the queue and the solo path;
# tests/test_packed.py runs packs through the same workers
TINY_ARGS = ["--steps", "150", "--batch-size", "8", "--history", "50", "--device", "cpu",
             "--checkpoint-every", "50", "--val-streams", "8", "--threads", "1", "--pack", "1"]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["PYTHONUNBUFFERED"] = "1"
    e["MPLBACKEND"] = "Agg"
    return e


def script(name, *args, cwd, timeout=300, check=False):
    proc = subprocess.run([sys.executable, str(ROOT / name), *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def worker_options(*args, name="w"):
    """The JSON a launcher hands one worker for ``training_01_all.py ARGS`` (paths relative to
    the worker's working directory)."""
    from gatedrnn.cli.main import train_options

    options = train_options([str(a) for a in args]).to_dict()
    options["name"] = name
    return json.dumps(options)


def start_worker(*args, cwd, name="w", log=None, extra_env=None):
    """One bare worker process (what training_01_all.py starts), its output to ``log``."""
    out = open(log or Path(cwd) / f"{name}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gatedrnn.running.worker"], cwd=cwd, env={**env(), **(extra_env or {})},
                            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    proc.stdin.write(worker_options(*args, name=name).encode())
    proc.stdin.close()
    return proc


def write_configs(cwd, configs):
    from gatedrnn.spec.grid import merge_configs

    (Path(cwd) / "results_01_all").mkdir(exist_ok=True)
    merge_configs(Path(cwd) / "rnn_configs.json", configs)


def claims(cwd):
    d = Path(cwd) / "results_01_all" / ".queue" / "claims"
    return [json.loads(p.read_text()) for p in d.glob("*.json")] if d.exists() else []


def results(cwd):
    return {p.stem: json.loads(p.read_text()) for p in (Path(cwd) / "results_01_all").glob("*.json")}


def wait_for(predicate, timeout=120, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def progress_step(cwd):
    """The step of the (single) running claim, from its heartbeat, or 0."""
    cs = claims(cwd)
    return (cs[0].get("progress") or {}).get("step", 0) if cs else 0


def kill(proc, sig=signal.SIGKILL):
    proc.send_signal(sig)
    return proc.wait(timeout=120)


# ---------------------------------------------------------------- a small finished sweep (tests/conftest.py: sweep)
def _sweep_configs():
    from gatedrnn import RNNConfig

    return (RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=16),
            RNNConfig(True, False, True, False, True, True, True, n_layers=2, state_size=16),
            RNNConfig(False, False, False, False, True, False, True, n_layers=1, state_size=12))


A, B, C = _sweep_configs()
SWEEP_ARGS = ["--steps", "150", "--batch-size", "8", "--history", "50", "--device", "cpu", "--threads", "1",
              "--checkpoint-every", "50", "--val-streams", "8", "--eval-every", "0"]


def gatedrnn(*args, cwd):
    """``gatedrnn ARGS`` in ``cwd``: ``train`` as a real process (it launches workers), every other
    command in this process through the same ``gatedrnn.cli.main.main`` (a process would spend most of
    its time importing torch), with its exit status, stdout and stderr."""
    if args and args[0] == "train":
        return subprocess.run([sys.executable, "-m", "gatedrnn", *map(str, args)], cwd=cwd, env=env(),
                              capture_output=True, text=True, timeout=300)
    import contextlib
    import io

    from gatedrnn.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse's own exits (--help)
                code = e.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["gatedrnn", *map(str, args)], code, out.getvalue(), err.getvalue())


def make_sweep(d):
    """A finished sweep of A and B in ``d``, C pending with a checkpoint and a stale claim."""
    from gatedrnn import TrainSettings
    from gatedrnn.training.loop import Interrupted
    from gatedrnn.store.status import HOST
    from gatedrnn.training.trainer import train

    write_configs(d, [A, B])
    proc = gatedrnn("train", *SWEEP_ARGS, cwd=d)
    assert proc.returncode == 0, proc.stderr
    write_configs(d, [C])  # appended: pending
    res = d / "results_01_all"
    settings = TrainSettings(steps=150, batch_size=8, history=50, device="cpu", checkpoint_every=50, val_streams=8,
                             eval_every=0)
    try:
        train(C, settings, checkpoint=res / "checkpoints" / f"{C.id}.pt",
              should_stop=iter([False] * 60 + [True] * 999).__next__)
    except Interrupted:
        pass
    else:
        raise AssertionError("C was not interrupted")
    (res / ".queue/claims" / f"{C.id}.json").write_text(json.dumps(
        {"id": C.id, "worker": "gone", "host": HOST, "pid": 999999, "token": "t", "claimed": 1.0,
         "heartbeat": time.time() - 5, "lease": 120.0, "attempt": 1, "progress": {"step": 60}}))
    return d
