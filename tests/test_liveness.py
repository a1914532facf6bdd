"""Liveness that trusts no other host's clock (issue 33; gatedrnn.store.status.Liveness), with real
worker processes whose clocks are shifted and whose host names differ (tests/clockskew): a host
30 s behind keeps every claim it heartbeats, and finishes its configurations with nothing taken
over; a host 60 s ahead that is SIGKILLed is taken over by a rerun on another host within the
lease and two heartbeats; both locks, solo and packed; the results equal an unskewed run's."""

import time
from pathlib import Path

import numpy as np
import pytest

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.store.lock import SOFT_LIFETIME
from helpers import claims, kill, results, start_worker, wait_for, write_configs

pytestmark = pytest.mark.slow

SKEW = str(Path(__file__).resolve().parent / "clockskew")
LEASE, BEAT = 10.0, 2.5  # a worker heartbeats every min(5, lease / 4) seconds
F, T = False, True
X, X2 = (RNNConfig(F, T, F, T, T, F, T, n_layers=1, state_size=16), RNNConfig(T, T, F, T, T, F, T, n_layers=1, state_size=16))
Y, Y2 = (RNNConfig(F, F, T, F, T, T, T, n_layers=1, state_size=16), RNNConfig(F, T, T, F, T, T, T, n_layers=1, state_size=16))
ARGS = ["--steps", "40000", "--batch-size", "8", "--history", "50", "--device", "cpu", "--checkpoint-every", "500",
        "--log-every", "50", "--eval-every", "0", "--val-streams", "8", "--threads", "1",
        "--lease-seconds", str(LEASE)]
SETTINGS = TrainSettings(steps=40000, batch_size=8, history=50, device="cpu", checkpoint_every=500, log_every=50,
                         eval_every=0, val_streams=8)


@pytest.fixture(scope="module")
def unskewed():
    import torch

    torch.set_num_threads(1)
    return {c.id: train(c, SETTINGS) for c in (X, Y)}


def host(shift, name):
    return {"PYTHONPATH": SKEW + ":" + str(Path(__file__).resolve().parents[1]), "GATEDRNN_TEST_CLOCK_SHIFT": str(shift),
            "GATEDRNN_TEST_HOST": name}


def training(cwd, ids, past=0):
    return lambda: all(any(c["id"] == cid and (c.get("progress") or {}).get("step", 0) > past for c in claims(cwd))
                       for cid in ids)


@pytest.mark.parametrize("lock", ["file", "soft"])
@pytest.mark.parametrize("packed", [False, True], ids=["solo", "packed"])
def test_skewed_clocks_neither_steal_live_claims_nor_keep_dead_ones(tmp_path, lock, packed, unskewed):
    mine, theirs = ([X, X2], [Y, Y2]) if packed else ([X], [Y])
    write_configs(tmp_path, mine + theirs)
    args = [*ARGS, "--lock", lock, "--pack", "2" if packed else "1"]
    slow = start_worker(*args, cwd=tmp_path, name="slow", extra_env=host(-30, "slow-host"))
    wait_for(training(tmp_path, [c.id for c in mine]), timeout=120, what="the slow host training")
    fast = start_worker(*args, cwd=tmp_path, name="fast", extra_env=host(+60, "fast-host"))
    # past its first checkpoint (step 500), so that whoever takes over resumes
    wait_for(training(tmp_path, [c.id for c in theirs], past=600), timeout=120, what="the fast host training")
    killed = time.monotonic()
    kill(fast)
    # killed holding a soft lock (a heartbeat takes it every 2.5 s): the others clear its marker
    # after watching it unchanged for the soft lock's lifetime (gatedrnn.store.lock), then the claims
    marker = tmp_path / "results_01_all" / ".queue" / "lock.soft"
    left = lock == "soft" and marker.exists() and "host=fast-host" in marker.read_text(errors="replace")
    rerun = start_worker(*args, cwd=tmp_path, name="rerun")
    # the slow host, done with its own, or the rerun: whoever has watched the dead claims for a lease
    taken = wait_for(lambda: all(any(c["id"] == y.id and c["worker"] != "fast" for c in claims(tmp_path))
                                 or y.id in results(tmp_path) for y in theirs) and time.monotonic(),
                     timeout=120 + SOFT_LIFETIME, what="the dead host's claims taken over")
    bound = LEASE + 2 * BEAT + 4 + (SOFT_LIFETIME if left else 0)  # + a rerun's start (importing torch)
    assert taken - killed <= bound, (taken - killed, left)
    assert rerun.wait(timeout=300) == 0 and slow.wait(timeout=300) == 0
    done = results(tmp_path)
    assert set(done) == {c.id for c in mine + theirs} and {r["status"] for r in done.values()} == {"done"}
    for c in mine:  # the slow host kept and finished its own: never taken over, never resumed
        assert done[c.id]["worker"] == "slow" and done[c.id]["resumes"] == 0
    for c in theirs:  # the dead host's, resumed from its checkpoint by another
        assert done[c.id]["worker"] in ("slow", "rerun") and done[c.id]["resumes"] >= 1
    logs = (tmp_path / "rerun.log").read_text() + (tmp_path / "slow.log").read_text()
    assert "stale claim of slow" not in logs
    for c in (X, Y):
        if packed:  # a pack member equals its solo run to float rounding
            np.testing.assert_allclose(done[c.id]["loss"], unskewed[c.id]["loss"], rtol=1e-5)
        else:
            assert done[c.id]["final weights sha256"] == unskewed[c.id]["final weights sha256"]
