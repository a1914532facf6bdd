"""A pack (gatedrnn/pack_run.py): each member trains exactly as its solo run, and its result
record is its solo run's in every key but timings and the pack; a pack checkpoints and
resumes as a unit."""

import itertools
import math

import numpy as np
import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.spec.config import SWITCHES
from gatedrnn.training.loop import Interrupted, drive
from gatedrnn.training.pack_run import PackRun
from gatedrnn.cli.tools import inspect
from gatedrnn.training.trainer import train_pack

COMBOS = [dict(zip(SWITCHES, v)) for v in itertools.product([False, True], repeat=7) if v[4] or v[5]]
SMALL = TrainSettings(steps=200, batch_size=4, history=30, log_every=10, eval_every=100, val_streams=4, device="cpu")
# the keys in which a member's record may differ from its solo run's record: when and how fast
# it ran (timings, memory), its pack, and the hash of weights that agree to float rounding only
EXEMPT = {"start time", "end time", "steps per second", "train seconds", "peak memory MB",
          "inference ms per step (batch 1)", "inference ms per step (training batch)", "final weights sha256"}
# losses: equal to float rounding (1e-5)
FLOATS = {"loss", "min loss", "val loss", "val bpb", "val curve", "test loss", "test bpb", "min val loss", "train split loss",
          "generalisation gap", "test loss (whole split)", "test bpb (whole split)"}


def group(n_layers, d=6):
    return [RNNConfig(**c, n_layers=n_layers, state_size=d) for c in COMBOS]


def assert_same_record(member, solo):
    assert member["pack"]["size"] >= 2 and "pack" not in solo
    assert set(member) - {"pack"} == set(solo), set(member) ^ set(solo)
    for key in sorted(set(solo) - EXEMPT):
        if key in FLOATS:
            np.testing.assert_allclose(np.asarray(member[key], dtype=float), np.asarray(solo[key], dtype=float),
                                       atol=1e-5, rtol=0, err_msg=key)
        else:
            assert member[key] == solo[key], (key, member[key], solo[key])


@pytest.mark.parametrize("configs", [group(1), group(2)[40:42]], ids=["all 96 switch combinations", "two"])
def test_each_members_record_is_its_solo_runs_record(configs):
    packed = train_pack(configs, SMALL)
    assert [r["id"] for r in packed] == [c.id for c in configs]
    for config, result in zip(configs, packed):
        solo = train(config, SMALL)
        assert result["status"] == "done" and len(result["loss"]) == 20
        assert result["optimizer updates"] == 200 and result["pack"]["size"] == len(configs)
        assert_same_record(result, solo)


def test_members_at_their_own_learning_rates_are_their_solo_runs_and_resume_from_a_checkpoint(tmp_path):
    """Issue 23: a swept lr. Members of one pack differ in lr (and seed) and stay one batched step;
    each member's record is its solo run's, and a stopped pack resumes to the same weights."""
    rates = [3e-4, 1e-3, 3e-3, 1e-2]
    configs = [RNNConfig(**c, n_layers=1, state_size=6, lr=rate, seed=seed)
               for c, rate, seed in zip(COMBOS[::20], rates, (0, 1, 0, 1))]
    packed = train_pack(configs, SMALL)
    for config, result in zip(configs, packed):
        assert result["lr"] == config.lr and result["settings"]["lr"] == SMALL.lr
        assert_same_record(result, train(config, SMALL))
    finals = [r["min loss"] for r in packed]
    assert len(set(finals)) == 4  # the rates matter
    ckpt = tmp_path / "pack.pt"
    seen = []
    with pytest.raises(Interrupted):
        train_pack(configs, SMALL, checkpoint=ckpt, should_stop=lambda: seen.append(1) or len(seen) >= 120)
    resumed = train_pack(configs, SMALL, checkpoint=ckpt)
    for a, b in zip(packed, resumed):
        assert a["final weights sha256"] == b["final weights sha256"] and b["resumes"] == 1


def test_a_pack_is_reproducible_and_resumes_bit_identically_from_its_checkpoint(tmp_path):
    configs = group(1)[::12]  # 8 members, mixed switches
    settings = TrainSettings(steps=120, batch_size=4, history=25, log_every=10, eval_every=50, val_streams=4,
                             checkpoint_every=40, device="cpu")
    straight = train_pack(configs, settings)
    assert [r["final weights sha256"] for r in train_pack(configs, settings)] == \
        [r["final weights sha256"] for r in straight]
    ckpt = tmp_path / "pack.pt"
    seen = []
    with pytest.raises(Interrupted):
        train_pack(configs, settings, checkpoint=ckpt, should_stop=lambda: seen.append(1) or len(seen) >= 65)
    seen_by_inspect = inspect(str(ckpt))
    assert seen_by_inspect["kind"] == "pack checkpoint" and 0 < seen_by_inspect["step"] < 120
    assert {m["id"] for m in seen_by_inspect["members"]} == {c.id for c in configs}
    resumed = train_pack(configs, settings, checkpoint=ckpt)
    for a, b in zip(straight, resumed):
        assert a["final weights sha256"] == b["final weights sha256"]
        assert a["loss"] == b["loss"] and a["val curve"] == b["val curve"]
        assert b["resumes"] == 1


def test_a_diverged_member_is_recorded_at_its_step_and_disturbs_no_other():
    configs = group(1)[:6]
    run = PackRun(configs, SMALL)
    poisoned = run.configs[2]
    state = run.model.member_state(2)
    state["readout.bias"] = torch.full_like(state["readout.bias"], math.nan)
    run.model.load_member(2, state)
    drive(run)
    out = run.results()
    assert out[poisoned.id]["status"] == "diverged" and out[poisoned.id]["diverged at step"] == 10
    assert out[poisoned.id]["val loss"] is None
    for config in configs:
        if config.id != poisoned.id:
            solo = train(config, SMALL)
            assert out[config.id]["status"] == "done"
            np.testing.assert_allclose(out[config.id]["loss"], solo["loss"], atol=1e-5)


def test_a_solo_run_finishes_a_member_from_the_pack_checkpoint(tmp_path):
    configs = group(1)[::24]
    settings = TrainSettings(steps=100, batch_size=4, history=25, log_every=10, checkpoint_every=40, device="cpu",
                             val_streams=4)
    ckpt = tmp_path / "pack.pt"
    seen = []
    with pytest.raises(Interrupted):
        train_pack(configs, settings, checkpoint=ckpt, should_stop=lambda: seen.append(1) or len(seen) >= 45)
    alone = train(configs[1], settings, pack_checkpoint=ckpt)
    straight = train(configs[1], settings)
    assert alone["resumes"] == 1
    np.testing.assert_allclose(alone["loss"], straight["loss"], atol=1e-5)


def test_members_with_their_own_seeds_read_their_own_data_and_start_from_their_own_weights():
    base = group(1)[5]
    configs = [RNNConfig.from_dict({**base.to_dict(), "seed": seed}) for seed in (3, 1, 3, 2)]
    configs[2] = RNNConfig.from_dict({**group(1)[60].to_dict(), "seed": 3})
    settings = TrainSettings(steps=60, batch_size=4, history=25, log_every=10, val_streams=4, device="cpu")
    for config, result in zip(configs, train_pack(configs, settings)):
        solo = train(config, settings)
        assert result["seed"] == solo["seed"] == config.seed
        np.testing.assert_allclose(result["loss"], solo["loss"], atol=1e-5)
