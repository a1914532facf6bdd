"""One run (gatedrnn/run.py): what it learns comes from its source, its state round-trips, and
its result record has one builder."""

import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.store.folder import result_problem
from gatedrnn.training.run import Run
from gatedrnn.data.sources import ByteSource, TaskSource

T, F = True, False
BYTES = RNNConfig(F, T, F, T, T, F, T, n_layers=1, state_size=8)
DELAYED = RNNConfig(F, T, F, T, T, F, T, n_layers=1, state_size=8, task="delayed", symbols=4, delay=2, length=6)
S = TrainSettings.tiny(steps=24, batch_size=2, history=9, log_every=4, eval_every=12, val_streams=2, device="cpu")


@pytest.mark.parametrize("config, kind", [(BYTES, ByteSource), (DELAYED, TaskSource)], ids=["bytes", "task"])
def test_a_run_reads_its_source_and_builds_a_sound_record(config, kind):
    run = Run(config, S)
    assert isinstance(run.source, kind) and run.window_length == run.source.window_length
    run.train_steps(24)
    run.record_evaluation()
    r = run.result()
    assert result_problem(r, config.id) is None and r["status"] == "done"
    assert r["optimizer updates"] == (24 if kind is ByteSource else 24 - 24 // 6 * 2)  # steps with a target
    assert r["dataset"] == run.source.name and r["history size"] == run.source.window_length
    assert (r["val bpb"] is None) == (kind is TaskSource)
    assert ("test metrics" in r) == ("chance" in r) == (kind is TaskSource)


def test_a_saved_state_restored_into_a_fresh_run_continues_exactly(tmp_path):
    a = Run(BYTES, S)
    a.train_steps(10)
    a.save(tmp_path / "a.pt")
    b = Run(BYTES, S)
    assert b.restore(tmp_path / "a.pt") and b.resumes == 1 and b.step == 10
    a.train_steps(24)
    b.train_steps(24)
    assert a.curve == b.curve and a.weights_sha256() == b.weights_sha256()
    assert torch.equal(a.ma, b.ma) and a.updates == b.updates == 24
