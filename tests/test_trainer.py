import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.data.corpus import load_corpus
from gatedrnn.training.trainer import CheckpointMismatch, Interrupted, Run

F_, T_ = False, True
TINY = RNNConfig(F_, T_, F_, T_, T_, F_, T_, n_layers=1, state_size=32)
GATED = RNNConfig(T_, T_, T_, T_, T_, T_, T_, n_layers=2, state_size=16)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def unigram_entropy(corpus):
    p = np.bincount(corpus.val, minlength=256) / len(corpus.val)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_training_learns_below_the_unigram_entropy(corpus):
    settings = TrainSettings.tiny(steps=600, batch_size=32, history=100, log_every=50)
    result = train(TINY, settings, corpus=corpus)
    assert result["status"] == "done"
    assert result["training steps"] == 600 and len(result["loss"]) == 12
    assert result["val loss"] < unigram_entropy(corpus)
    assert result["min loss"] == min(result["loss"])
    assert result["loss"][-1] < result["loss"][0]
    assert result["val bpb"] == pytest.approx(result["val loss"] / math.log(2))
    assert result["dataset sha256"] == corpus.sha256
    assert result["parameters"] == sum(p.numel() for p in Run(TINY, settings, corpus).model.parameters())


def test_same_seed_same_curve_other_seed_other_curve(corpus):
    s = TrainSettings.tiny(steps=200)
    a, b = train(GATED, s, corpus=corpus), train(GATED, s, corpus=corpus)
    assert a["loss"] == b["loss"] and a["val loss"] == b["val loss"]
    assert a["final weights sha256"] == b["final weights sha256"]
    c = train(GATED, s.replace(seed=1), corpus=corpus)
    assert c["loss"] != a["loss"]
    # a swept seed in the configuration overrides the settings' seed
    d = train(RNNConfig(**{**GATED.to_dict(), "seed": 1}), s, corpus=corpus)
    assert d["loss"] == c["loss"] and d["seed"] == 1


def test_no_gradient_crosses_time(corpus):
    """The gradient of a step equals the gradient with the incoming state as a constant."""
    run = Run(GATED, TrainSettings.tiny(), corpus)
    run.train_steps(5)  # mid-window: the states are non-zero
    assert all(s.grad_fn is None and not s.requires_grad for s in run.states)
    states = [s.clone() for s in run.states]
    x, y = run.window[run.pos], run.window[run.pos + 1]
    logits, _ = run.model.step(x, states)
    expected = torch.autograd.grad(F.cross_entropy(logits, y), list(run.model.parameters()))
    run.train_steps(6)
    for p, g in zip(run.model.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_runs_exactly_steps_and_records_the_result_keys(corpus):
    s = TrainSettings.tiny(steps=130, log_every=20, eval_every=60)
    r = train(TINY, s, corpus=corpus)
    assert r["training steps"] == 130 and len(r["loss"]) == 6
    assert [p[0] for p in r["val curve"]] == [60, 120, 130]
    for key in ["start time", "end time", "loss", "min loss", "training steps", "batch size", "history size",
                "dataset", "status", "val loss", "val bpb", "steps per second", "parameters",
                "peak memory MB", "device", "seed", "resumes", "settings", "versions", "id"]:
        assert key in r, key
    assert r["id"] == TINY.id and r["settings"] == s.to_dict()


def test_divergence_is_reported_with_the_curve_so_far(corpus):
    r = train(GATED, TrainSettings.tiny(steps=300, lr=1e20, log_every=5), corpus=corpus)
    assert r["status"] == "diverged"
    assert r["training steps"] == r["diverged at step"] < 300
    assert r["val loss"] is None
    assert len(r["loss"]) == r["diverged at step"] // 5 - 1
    assert all(math.isfinite(v) for v in r["loss"])


def test_stop_and_resume_is_identical_to_an_uninterrupted_run(tmp_path, corpus):
    s = TrainSettings.tiny(steps=250, checkpoint_every=100, eval_every=120)
    straight = train(GATED, s, corpus=corpus)
    ckpt = tmp_path / "run.pt"
    calls = {"n": 0}

    def stop_at_173():
        calls["n"] += 1
        return calls["n"] >= 173

    with pytest.raises(Interrupted):
        train(GATED, s, checkpoint=ckpt, should_stop=stop_at_173, corpus=corpus)
    assert ckpt.exists()
    resumed = train(GATED, s, checkpoint=ckpt, corpus=corpus)
    assert resumed["resumes"] == 1
    assert resumed["loss"] == straight["loss"]
    assert resumed["val curve"] == straight["val curve"]
    assert resumed["final weights sha256"] == straight["final weights sha256"]


def test_resume_with_other_settings_is_refused(tmp_path, corpus):
    s = TrainSettings.tiny(steps=200)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        train(TINY, s, checkpoint=ckpt, should_stop=lambda: True, corpus=corpus)
    with pytest.raises(CheckpointMismatch, match="batch_size"):
        train(TINY, s.replace(batch_size=8), checkpoint=ckpt, corpus=corpus)


def test_unreadable_checkpoint_restarts_from_scratch(tmp_path, corpus):
    s = TrainSettings.tiny(steps=100)
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"\x80\x02 truncated")
    with pytest.warns(RuntimeWarning, match="unreadable checkpoint"):
        r = train(TINY, s, checkpoint=ckpt, corpus=corpus)
    assert r["loss"] == train(TINY, s, corpus=corpus)["loss"]
    assert "checkpoint problems" in r and (tmp_path / "run.pt.corrupt").exists()
