"""The one loop (gatedrnn/loop.py): events of drive(), stops, seeded initial models; a run and
a pack go through the same code."""

import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.training.loop import MA_DECAY, MA_START, Interrupted, Loop, drive, seeded_model
from gatedrnn.training.pack_run import PackRun
from gatedrnn.training.run import Run

T, F = True, False
A = RNNConfig(F, T, F, T, T, F, T, n_layers=1, state_size=8)
B = RNNConfig(T, T, T, T, T, T, T, n_layers=1, state_size=8)
S = TrainSettings.tiny(steps=70, batch_size=2, history=9, log_every=5, eval_every=20, checkpoint_every=30,
                       val_streams=2, device="cpu")


@pytest.mark.parametrize("make", [lambda: Run(A, S), lambda: PackRun([A, B], S)], ids=["run", "pack"])
def test_drive_evaluates_and_saves_at_their_steps_and_evaluates_at_the_end(make):
    run = make()
    assert isinstance(run, Loop)
    saved, evaluated = [], []
    record = run.record_evaluation
    run.record_evaluation = lambda: (evaluated.append(run.step), record())
    drive(run, save=lambda: saved.append(run.step))
    assert saved == [30, 60]  # not at the end: the result is written then
    assert evaluated == [20, 40, 60, 70]
    assert run.step == 70 and run.pos == 70 % 9


def test_a_stop_saves_and_raises_interrupted_at_the_step_it_was_asked():
    run = Run(A, S)
    polls, saved = [], []
    with pytest.raises(Interrupted, match="stopped at step 13 of 70"):
        drive(run, save=lambda: saved.append(run.step), should_stop=lambda: polls.append(1) or len(polls) >= 13)
    assert saved == [13]


def test_the_moving_average_follows_the_original_studys_rule():
    run = Run(A, S)
    losses = []
    rule_step = run.rule.step
    run.rule.step = lambda r, x, y: losses.append(rule_step(r, x, y)) or losses[-1]
    run.train_steps(5)
    ma = MA_START
    for loss in losses:
        ma = MA_DECAY * ma + (1 - MA_DECAY) * float(loss)
    assert run.curve == [pytest.approx(ma, rel=1e-5)] and run.curve_start == 5


def test_seeded_model_is_the_same_for_one_seed_and_leaves_the_global_generator_alone():
    before = torch.get_rng_state()
    a, b, c = seeded_model(A, 3), seeded_model(A, 3), seeded_model(A, 4)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
