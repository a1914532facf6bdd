"""The checkpoint formats (gatedrnn/checkpoints.py): one builder, one reader, one compatibility
check, one set-aside rule; checkpoints written before the rebuild still resume."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.training import checkpoints
from gatedrnn.training.checkpoints import CheckpointMismatch, RunState
from gatedrnn.training.run import Run
from gatedrnn.training.loop import Interrupted
from gatedrnn.training.trainer import train, train_pack
from gatedrnn.data.corpus import load_corpus

FIXTURES = Path(__file__).resolve().parent / "fixtures"
T, F = True, False
# what tests/fixtures/{solo,pack}.pt were made of, by the code of main before issue 21
# (commit fb89882), stopped at step 29 of 60 (see tests/fixtures/README.md)
SOLO = RNNConfig(T, T, F, T, T, T, T, n_layers=2, state_size=5)
MEMBERS = [RNNConfig(F, T, F, F, T, F, T, n_layers=1, state_size=5), RNNConfig(T, F, T, T, T, T, T, n_layers=1, state_size=5)]


def fixture_settings() -> TrainSettings:
    """The fixtures' settings; made before the split rule, they validate on the whole held-out
    part (``tail``), and before issue 30, with the N(0, 1) input map (``normal``), as their
    results folder remembers."""
    return TrainSettings(steps=60, batch_size=3, history=12, log_every=5, eval_every=20, checkpoint_every=20,
                         val_streams=3, device="cpu", data=str(FIXTURES / "corpus.txt"), split="tail",
                         input_init="normal")


def assert_same_run_across_machines(a: dict, b: dict, weights_a: Path, weights_b: Path) -> None:
    """Two runs of one configuration, one resumed from a checkpoint written on another machine:
    equal to float tolerance (CPUs' kernels round differently, so bit-identical results are a
    same-machine promise; the bit-exact resume is tested with checkpoints written here)."""
    assert b["resumes"] == 1 and a["optimizer updates"] == b["optimizer updates"] == 60
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a["val curve"], b["val curve"], rtol=1e-4, atol=1e-5)
    wa, wb = load_file(weights_a), load_file(weights_b)
    assert set(wa) == set(wb)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.fixture
def old(tmp_path):
    for name in ("solo.pt", "pack.pt"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def test_a_solo_checkpoint_of_the_old_main_resumes_to_the_uninterrupted_run(old):
    s = fixture_settings()
    straight = train(SOLO, s, weights=old / "straight.safetensors")
    resumed = train(SOLO, s, checkpoint=old / "solo.pt", weights=old / "resumed.safetensors")
    assert_same_run_across_machines(straight, resumed, old / "straight.safetensors", old / "resumed.safetensors")
    assert "test loss" not in resumed  # no test split under the old rule
    assert "embedding.bias" not in load_file(old / "resumed.safetensors")  # the old input map


def test_a_checkpoint_written_here_resumes_bit_for_bit(tmp_path):
    """The same-machine promise, for both input maps: a run stopped at step 29 and resumed from
    its checkpoint ends with the uninterrupted run's weights, bit for bit."""
    for init in ("linear", "normal"):
        s = fixture_settings().replace(input_init=init, split="windows")
        straight = train(SOLO, s)
        polls = iter(range(10**6))
        with pytest.raises(Interrupted):
            train(SOLO, s, checkpoint=tmp_path / f"{init}.pt", should_stop=lambda: next(polls) >= 29)
        assert checkpoints.read_run(tmp_path / f"{init}.pt").step == 29
        resumed = train(SOLO, s, checkpoint=tmp_path / f"{init}.pt")
        assert resumed["resumes"] == 1
        assert resumed["final weights sha256"] == straight["final weights sha256"]
        assert resumed["loss"] == straight["loss"] and resumed["test loss"] == straight["test loss"]


def test_an_old_checkpoint_is_not_resumed_under_the_new_split_rule(old):
    with pytest.raises(CheckpointMismatch, match="made with split='tail' but this run has split='blocks'"):
        checkpoints.read_run(old / "solo.pt").check(SOLO, fixture_settings().replace(split="blocks"),
                                                             load_corpus(FIXTURES / "corpus.txt").sha256, "solo.pt")


def test_a_pack_checkpoint_of_the_old_main_resumes_to_the_uninterrupted_pack(old):
    s = fixture_settings()
    straight = train_pack(MEMBERS, s, weights=lambda cid: old / f"straight-{cid}.safetensors")
    resumed = train_pack(MEMBERS, s, checkpoint=old / "pack.pt", weights=lambda cid: old / f"resumed-{cid}.safetensors")
    for a, b in zip(straight, resumed):
        assert_same_run_across_machines(a, b, old / f"straight-{a['id']}.safetensors",
                                        old / f"resumed-{b['id']}.safetensors")
    # the old main recorded 0 updates in a pack's checkpoint: a pack's step is one update of each member
    assert [r["optimizer updates"] for r in resumed] == [60, 60]


def test_the_old_files_read_as_run_states_with_what_they_lacked_filled_in(old):
    members = checkpoints.read_pack(old / "pack.pt")
    assert set(members) == {c.id for c in MEMBERS}
    state = checkpoints.read_run(old / "solo.pt")
    assert isinstance(state, RunState) and state.step == 29 and state.config["id"] == SOLO.id
    raw = checkpoints.load_file(old / "solo.pt")
    del raw["updates"], raw["ma started"]  # as in checkpoints older still
    again = RunState.from_dict(raw, "x")
    assert again.updates == again.step == 29 and again.ma_started is True


def test_a_run_state_round_trips_through_its_checkpoint(tmp_path):
    s = TrainSettings.tiny(steps=40, batch_size=2, history=10, val_streams=2, device="cpu")
    run = Run(SOLO, s)
    run.train_steps(17)
    path = tmp_path / "c.pt"
    run.save(path)
    back = checkpoints.read_run(path)
    built = run.snapshot()
    assert back.to_dict().keys() == built.to_dict().keys()
    assert back.step == 17 and back.pos == built.pos and back.curve == built.curve
    assert all(torch.equal(a, b) for a, b in zip(back.states, built.states))
    assert checkpoints.kind_of(checkpoints.load_file(path)) == "checkpoint"


def test_the_compatibility_check_names_what_differs(old):
    state = checkpoints.read_run(old / "solo.pt")
    s = fixture_settings()
    with pytest.raises(CheckpointMismatch, match="not " + MEMBERS[0].id):
        state.check(MEMBERS[0], s, state.dataset_sha256, "here")
    with pytest.raises(CheckpointMismatch, match="batch_size=3 but this run has batch_size=4"):
        state.check(SOLO, s.replace(batch_size=4), state.dataset_sha256, "here")
    with pytest.raises(CheckpointMismatch, match="another corpus"):
        state.check(SOLO, s, "0" * 64, "here")
    with pytest.raises(CheckpointMismatch, match="checkpoint format 7"):
        RunState.from_dict({"format": 7}, "here")


def test_unreadable_files_are_set_aside_by_the_folders_rule_and_read_as_missing(tmp_path):
    path = tmp_path / "x.pt"
    for n, kind in enumerate(("run", "pack")):
        path.write_bytes(b"garbage")
        problems = []
        with pytest.warns(RuntimeWarning, match="unreadable"):
            got = checkpoints.read_run(path, problems) if kind == "run" else checkpoints.read_pack(path, problems)
        assert got is None and len(problems) == 1 and not path.exists()
    # the second one did not overwrite the first: the folder's numbering
    assert (tmp_path / "x.pt.corrupt").read_bytes() == b"garbage"
    assert (tmp_path / "x.pt.corrupt-2").exists()
    assert checkpoints.read_run(tmp_path / "missing.pt") is None


def test_a_solo_checkpoint_where_a_pack_checkpoint_belongs_is_not_read_as_one(old):
    with pytest.warns(RuntimeWarning, match="unreadable pack checkpoint"):
        assert checkpoints.read_pack(old / "solo.pt") is None
    assert (old / "solo.pt.corrupt").exists()


def test_only_checkpoints_unpickles_pt_files():
    package = Path(__file__).resolve().parents[1] / "gatedrnn"
    for path in package.glob("*.py"):
        if path.name != "checkpoints.py":
            assert "torch.load" not in path.read_text(), path.name
