import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from gatedrnn import RNN, RNNConfig, TrainSettings, train
from gatedrnn.models.cells import ESGPLayer, ESNLayer, GRULayer, LSTMLayer, TanhRNNLayer, scaled_reservoir, spectral_radius
from gatedrnn.data.corpus import load_corpus
from gatedrnn.models.model import ByteModel
from gatedrnn.training.rules import TruncatedBPTTRule
from gatedrnn.training.trainer import Interrupted, Run
from helpers import TINY_ARGS, results, script


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.mark.parametrize("ours, theirs", [
    (lambda: GRULayer(5, 7), lambda: torch.nn.GRUCell(5, 7)),
    (lambda: TanhRNNLayer(5, 7), lambda: torch.nn.RNNCell(5, 7, nonlinearity="tanh")),
])
def test_gru_and_rnn_equal_the_torch_cells_with_copied_weights(ours, theirs):
    torch.manual_seed(0)
    a, b = ours(), theirs()
    b.load_state_dict(a.cell.state_dict())
    x, s = torch.randn(3, 5), torch.randn(3, 7)
    o, n = a(x, s)
    torch.testing.assert_close(o, b(x, s))
    torch.testing.assert_close(n, o)


def test_lstm_equals_the_torch_cell_with_state_h_c():
    torch.manual_seed(0)
    a, b = LSTMLayer(5, 7), torch.nn.LSTMCell(5, 7)
    b.load_state_dict(a.cell.state_dict())
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    o, n = a(x, torch.cat([h, c], 1))
    h2, c2 = b(x, (h, c))
    torch.testing.assert_close(o, h2)
    torch.testing.assert_close(n, torch.cat([h2, c2], 1))
    assert a.state_width == 14


@pytest.mark.parametrize("density, radius", [(0.1, 0.9), (0.5, 1.2), (1.0, 0.5)])
def test_reservoir_spectral_radius_is_the_one_asked_after_masking(density, radius):
    torch.manual_seed(1)
    for layer in (ESNLayer(16, 64, density=density, spectral_radius=radius),
                  ESGPLayer(16, 64, density=density, spectral_radius=radius)):
        assert spectral_radius(layer.W) == pytest.approx(radius, rel=1e-6)
        assert torch.equal(layer.W != 0, layer.mask.bool())  # W is masked
        assert abs(layer.mask.mean().item() - density) < 0.06


def _first_draw(size, density):
    w = torch.rand(size, size) * 2 - 1
    mask = (torch.rand(size, size) < density).float()
    return w * mask, mask


def test_a_nilpotent_reservoir_is_drawn_again_and_a_first_draw_with_a_radius_is_kept():
    nilpotent = good = None
    for seed in range(500):
        torch.manual_seed(seed)
        masked, mask = _first_draw(8, 0.1)
        if spectral_radius(masked) == 0.0:
            nilpotent = nilpotent if nilpotent is not None else (seed, mask)
        elif good is None:
            good = (seed, masked)
    assert nilpotent is not None and good is not None  # 8x8 at density 0.1: both are common
    torch.manual_seed(nilpotent[0])
    w, mask = scaled_reservoir(8, 0.1, 0.9)
    assert spectral_radius(w) == pytest.approx(0.9, rel=1e-6) and not torch.equal(mask, nilpotent[1])
    torch.manual_seed(good[0])
    w, _ = scaled_reservoir(8, 0.1, 0.9)
    torch.testing.assert_close(w, good[1] * (0.9 / spectral_radius(good[1])), rtol=0, atol=0)
    with pytest.raises(ValueError, match="8x8 reservoir at density 0.0 had no non-zero eigenvalue in 100 draws"):
        scaled_reservoir(8, 0.0, 0.9)


def test_esn_matches_its_equation():
    torch.manual_seed(0)
    layer = ESNLayer(4, 6, density=0.5, spectral_radius=0.9, input_scaling=0.5, leak=0.3)
    assert layer.W_in.abs().max() <= 0.5
    x, s = torch.randn(2, 4), torch.randn(2, 6)
    expected = (1 - 0.3) * s + 0.3 * torch.tanh(x @ layer.W_in.T + s @ layer.W.T)
    o, n = layer(x, s)
    torch.testing.assert_close(n, expected)
    torch.testing.assert_close(o, expected)
    assert list(layer.parameters()) == []  # nothing learns


def test_esgp_matches_its_equation():
    torch.manual_seed(0)
    layer = ESGPLayer(4, 6, density=0.5, spectral_radius=0.9)
    x, h = torch.randn(2, 4), torch.randn(2, 6)
    h_tilde = torch.tanh(x @ layer.W_in.weight.T + h @ layer.W.T)
    g = torch.sigmoid(h_tilde @ layer.gate.weight.T + layer.gate.bias)
    o, n = layer(x, h)
    torch.testing.assert_close(n, g * h_tilde + (1 - g) * h)
    assert {name for name, _ in layer.named_parameters()} == {"W_in.weight", "gate.weight", "gate.bias"}
    assert {name for name, _ in layer.named_buffers()} == {"W", "mask"}


@pytest.mark.parametrize("cell", ["esn", "esgp"])
def test_fixed_weights_do_not_change_and_get_no_gradient(cell, corpus):
    config = RNNConfig(cell=cell, n_layers=2, state_size=32)
    run = Run(config, TrainSettings.tiny(steps=60), corpus)
    fixed = {n: b.clone() for n, b in run.model.named_buffers()}
    if cell == "esn":
        fixed["embedding"] = run.model.embedding.weight.clone()
        trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
        assert trainable == {"readout.weight", "readout.bias"}
    run.train_steps(60)
    for name, before in fixed.items():
        after = run.model.embedding.weight if name == "embedding" else dict(run.model.named_buffers())[name]
        assert torch.equal(before, after), name
    assert run.model.num_parameters() == sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    assert run.model.num_parameters() < sum(p.numel() for p in run.model.parameters()) + sum(
        b.numel() for b in run.model.buffers())


def test_deep_esn_readout_sees_every_layer():
    model = ByteModel(RNNConfig(cell="esn", n_layers=3, state_size=16))
    assert model.readout.in_features == 48


GATED_SWITCHES = dict(use_input_gate=False, use_forget_gate=True, use_output_gate=False, use_state_gate=False,
                      use_new_state=True, use_old_state=False, use_residual=True)


@pytest.mark.parametrize("cell", ["gated", "gru", "lstm", "rnn", "esn", "esgp"])
def test_every_cell_trains_and_has_the_sequence_api(cell, corpus):
    options = GATED_SWITCHES if cell == "gated" else {}
    config = RNNConfig(cell=cell, n_layers=2, state_size=16, **options)
    r = train(config, TrainSettings.tiny(steps=100), corpus=corpus)
    assert r["status"] == "done" and math.isfinite(r["val loss"])
    assert r.get("cell", "gated") == cell
    torch.manual_seed(0)
    rnn = RNN(3, 8, num_layers=2, batch_first=True, cell=cell, **options)
    out, h_n = rnn(torch.randn(4, 5, 3))
    width = 16 if cell == "lstm" else 8
    assert out.shape == (4, 5, 8) and h_n.shape == (2, 4, width)


def test_ridge_readout_is_solved_in_closed_form_and_learns(corpus):
    config = RNNConfig(cell="esn", readout="ridge", n_layers=1, state_size=64, spectral_radius=0.9)
    r = train(config, TrainSettings.tiny(steps=300, log_every=50), corpus=corpus)
    assert r["status"] == "done" and len(r["loss"]) == 6
    assert r["val loss"] < math.log(256)  # better than uniform
    run = Run(config, TrainSettings.tiny(steps=300), corpus)
    assert run.optimizer is None and torch.count_nonzero(run.model.readout.weight) == 0
    run.train_steps(50)
    assert torch.count_nonzero(run.model.readout.weight) > 0
    with pytest.raises(ValueError, match="bptt"):
        RNNConfig(cell="esn", readout="ridge", bptt=4)


def test_bptt_gradient_flows_through_the_chunk_and_differs_from_detached(corpus):
    config = RNNConfig(cell="gru", n_layers=1, state_size=16, bptt=2)
    run = Run(config, TrainSettings.tiny(steps=10, history=50), corpus)
    run._new_window()
    params = list(run.model.parameters())
    w, s0 = run.window, run.states
    # through time: the mean loss of two steps, the second reading the first one's state
    l1, s1 = run.model.step(w[0], s0)
    l2, _ = run.model.step(w[1], s1)
    through = torch.autograd.grad((F.cross_entropy(l1, w[1]) + F.cross_entropy(l2, w[2])) / 2, params,
                                  retain_graph=True)
    l2d, _ = run.model.step(w[1], [s.detach() for s in s1])
    detached = torch.autograd.grad((F.cross_entropy(l1, w[1]) + F.cross_entropy(l2d, w[2])) / 2, params)
    assert any(not torch.allclose(a, b) for a, b in zip(through, detached))
    run.window = w
    run.train_steps(2)  # one optimizer step over the chunk; its gradient stays in .grad
    for p, g in zip(params, through):
        torch.testing.assert_close(p.grad, g)


def test_bptt_path_with_k_1_equals_the_existing_trainer(corpus, monkeypatch):
    config = RNNConfig(cell="gru", n_layers=1, state_size=16)
    s = TrainSettings.tiny(steps=150)
    plain = train(config, s, corpus=corpus)
    with monkeypatch.context() as m:  # the truncated-BPTT rule with k = 1
        m.setattr(Run, "_rule_kind", lambda self: "bptt")
        forced = train(config, s, corpus=corpus)
        assert isinstance(Run(config, s, corpus).rule, TruncatedBPTTRule)
    assert forced["loss"] == plain["loss"] and forced["final weights sha256"] == plain["final weights sha256"]
    k32 = train(RNNConfig(cell="gru", n_layers=1, state_size=16, bptt=32), s, corpus=corpus)
    assert k32["training steps"] == 150 and k32["loss"] != plain["loss"]


def test_bptt_stop_and_resume_is_identical(tmp_path, corpus):
    config = RNNConfig(cell="lstm", n_layers=1, state_size=16, bptt=7)
    s = TrainSettings.tiny(steps=230, checkpoint_every=50, eval_every=100)
    straight = train(config, s, corpus=corpus)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 20  # polled once per chunk of 7 steps

    with pytest.raises(Interrupted):
        train(config, s, checkpoint=tmp_path / "c.pt", should_stop=stop, corpus=corpus)
    resumed = train(config, s, checkpoint=tmp_path / "c.pt", corpus=corpus)
    assert resumed["resumes"] == 1
    assert resumed["loss"] == straight["loss"] and resumed["val curve"] == straight["val curve"]
    assert resumed["final weights sha256"] == straight["final weights sha256"]


def test_gated_ids_are_unchanged_and_cell_configs_are_validated():
    gated = RNNConfig.from_dict({"use_input_gate": True, "use_forget_gate": True, "use_output_gate": True,
                                 "use_state_gate": True, "use_new_state": True, "use_old_state": True,
                                 "use_residual": True, "n_layers": 3, "state_size": 256})
    assert gated.id == "49dcbda27269d37059627d966eff5981c9c463f4e6d289964eeecf63bf64c65c"
    assert "cell" not in gated.to_dict() and "bptt" not in gated.to_dict()
    esn = RNNConfig.from_dict({"cell": "esn", "n_layers": 1, "state_size": 64})
    assert esn.to_dict()["spectral_radius"] == 0.9 and esn.to_dict()["readout"] == "sgd"
    with pytest.raises(ValueError, match="use_forget_gate"):
        RNNConfig.from_dict({"cell": "gru", "use_forget_gate": True, "n_layers": 1, "state_size": 8})
    with pytest.raises(ValueError, match="density"):
        RNNConfig.from_dict({"cell": "gru", "density": 0.5, "n_layers": 1, "state_size": 8})
    with pytest.raises(ValueError, match="cell must be"):
        RNNConfig.from_dict({"cell": "transformer", "n_layers": 1, "state_size": 8})
    with pytest.raises(ValueError, match="spectral_radius"):
        RNNConfig(cell="esgp", spectral_radius=-1.0)


@pytest.mark.slow
def test_a_mixed_sweep_runs_through_the_queue_and_into_the_analysis(tmp_path):
    script("init_experiments.py", "--cells", "gated", "gru", "esn", "esgp", "--layers", "1",
                  "--state-sizes", "32", "--bptt", "1", "4", cwd=tmp_path, check=True)
    entries = json.loads((tmp_path / "rnn_configs.json").read_text())
    gated = [e for e in entries if "cell" not in e]
    assert len(gated) == 2 * 48  # bptt 1 and 4
    others = [e for e in entries if "cell" in e]
    assert sorted({(e["cell"], e.get("readout"), e.get("bptt", 1)) for e in others}) == sorted(
        [("gru", None, 1), ("gru", None, 4), ("esgp", None, 1), ("esgp", None, 4),
         ("esn", "sgd", 1), ("esn", "sgd", 4), ("esn", "ridge", 1)])
    # train only the non-gated ones plus two gated (a second config file keeps it small)
    small = others + gated[:2]
    (tmp_path / "small.json").write_text(json.dumps(small))
    run = script("training_01_all.py", "--workers", "2", *TINY_ARGS, "--steps", "100",
                 "--config-file", "small.json", cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    done = results(tmp_path)
    assert len(done) == len(small) and {r["status"] for r in done.values()} == {"done"}
    ex = script("examine_results_01_all.py", "--config-file", "small.json", "--threshold", "5",
                cwd=tmp_path, check=True)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary["cell"].fillna("gated")) == {"gated", "gru", "esn", "esgp"}
    assert "cell" in (tmp_path / "summary.md").read_text()
    assert "best:" in ex.stdout
