"""The checkpoint formats (gatedrnn/checkpoints.py): one builder, one reader, one compatibility
check, one set-aside rule; checkpoints written before the rebuild still resume."""

import shutil
from pathlib import Path

import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn import checkpoints
from gatedrnn.checkpoints import CheckpointMismatch, RunState
from gatedrnn.run import Run
from gatedrnn.trainer import train, train_pack
from gatedrnn.data import load_corpus

FIXTURES = Path(__file__).resolve().parent / "fixtures"
T, F = True, False
# what tests/fixtures/{solo,pack}.pt were made of, by the code of main before issue 21
# (commit fb89882), stopped at step 29 of 60 (see tests/fixtures/README.md)
SOLO = RNNConfig(T, T, F, T, T, T, T, n_layers=2, state_size=5)
MEMBERS = [RNNConfig(F, T, F, F, T, F, T, n_layers=1, state_size=5), RNNConfig(T, F, T, T, T, T, T, n_layers=1, state_size=5)]


def fixture_settings() -> TrainSettings:
    """The fixtures' settings; made before the split rule, they validate on the whole held-out
    part (``tail``), as their results folder remembers."""
    return TrainSettings(steps=60, batch_size=3, history=12, log_every=5, eval_every=20, checkpoint_every=20,
                         val_streams=3, device="cpu", data=str(FIXTURES / "corpus.txt"), split="tail")


@pytest.fixture
def old(tmp_path):
    for name in ("solo.pt", "pack.pt"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def test_a_solo_checkpoint_of_the_old_main_resumes_to_the_uninterrupted_run(old):
    s = fixture_settings()
    straight = train(SOLO, s)
    resumed = train(SOLO, s, checkpoint=old / "solo.pt")
    assert resumed["resumes"] == 1
    assert resumed["final weights sha256"] == straight["final weights sha256"]
    assert resumed["loss"] == straight["loss"] and resumed["val curve"] == straight["val curve"]
    assert resumed["optimizer updates"] == straight["optimizer updates"] == 60
    assert "test loss" not in resumed  # no test split under the old rule


def test_an_old_checkpoint_is_not_resumed_under_the_new_split_rule(old):
    with pytest.raises(CheckpointMismatch, match="made with split='tail' but this run has split='blocks'"):
        checkpoints.read_run(old / "solo.pt").check(SOLO, fixture_settings().replace(split="blocks"),
                                                             load_corpus(FIXTURES / "corpus.txt").sha256, "solo.pt")


def test_a_pack_checkpoint_of_the_old_main_resumes_to_the_uninterrupted_pack(old):
    s = fixture_settings()
    straight = train_pack(MEMBERS, s)
    resumed = train_pack(MEMBERS, s, checkpoint=old / "pack.pt")
    for a, b in zip(straight, resumed):
        assert b["resumes"] == 1 and a["final weights sha256"] == b["final weights sha256"]
        assert a["loss"] == b["loss"]
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
