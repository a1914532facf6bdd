"""The training paths on a CUDA GPU (issue 14, part 1). Marked ``cuda``: skipped, saying so, on a
machine where torch sees no CUDA device (this project's CI has none; the results of the runs on
a lent GPU are in benchmarks/gpu_runs.md)."""

import signal

import numpy as np
import pytest
import torch

from gatedrnn import GatedLayer, RNNConfig, TrainSettings, train
from gatedrnn.models.model import ByteModel
from gatedrnn.training.rules import HandWrittenRule
from gatedrnn.training.trainer import Run
from helpers import results, script, start_worker, wait_for, write_configs
from test_layers import COMBOS

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device here")]

DEV = "cuda"
CONFIG = RNNConfig(True, True, True, True, True, True, True, n_layers=2, state_size=64)


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-30))


@pytest.mark.parametrize("sw", COMBOS, ids=lambda sw: "".join(k[4] if v else "_" for k, v in sw.items()))
def test_hand_written_backward_equals_autograd_on_cuda(sw):
    """One layer's hand-written backward against autograd with the state held constant, float32
    on the GPU, against a float64 reference for scale."""
    torch.manual_seed(0)
    layer = GatedLayer(48, 48, **sw).to(DEV)
    x = torch.randn(64, 48, device=DEV, requires_grad=True)
    s = torch.randn(64, 48, device=DEV)
    dout = torch.randn(64, 48, device=DEV)
    out, new = layer(x, s)
    params = [p for p in layer.parameters()]
    expected = torch.autograd.grad(out, [x, *params], dout, allow_unused=True)
    for p in params:
        p.grad = torch.full_like(p, float("nan"))  # every gradient must be written
    with torch.no_grad():
        out2, new2, keep = layer.forward_keep(x.detach(), s)
        dx = layer.backward_step(keep, dout)
    assert rel(out2, out.detach()) < 1e-5 and rel(new2, new.detach()) < 1e-5
    if dx is None:  # documented: None when the output does not depend on x
        assert expected[0] is None or float(expected[0].abs().max()) == 0.0
    else:
        assert rel(dx, expected[0]) < 1e-4
    for p, g in zip(params, expected[1:]):
        g = torch.zeros_like(p) if g is None else g
        assert torch.isfinite(p.grad).all()
        assert rel(p.grad, g) < 1e-4 or float(g.norm()) < 1e-6


def test_byte_model_step_equals_autograd_on_cuda():
    torch.manual_seed(1)
    model = ByteModel(CONFIG).to(DEV)
    assert model.manual_backward
    params = list(model.parameters())
    x, y = torch.randint(0, 256, (128,), device=DEV), torch.randint(0, 256, (128,), device=DEV)
    states = [torch.randn(128, 64, device=DEV) for _ in range(2)]
    logits, new_states = model.step(x, states)
    loss = torch.nn.functional.cross_entropy(logits, y)
    expected = torch.autograd.grad(loss, params)
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    got, got_states = model.train_step(x, y, states)
    assert abs(got.item() - loss.item()) < 1e-5
    for (name, p), g in zip(model.named_parameters(), expected):
        assert rel(p.grad, g) < 1e-4, name


def test_a_short_run_on_cuda_follows_the_autograd_path():
    s = TrainSettings.tiny(steps=300, log_every=25, device=DEV, batch_size=64)
    runs = []
    for autograd in (False, True):
        run = Run(CONFIG, s, autograd=autograd)
        assert isinstance(run.rule, HandWrittenRule) != autograd
        run.train_steps(300)
        runs.append(run)
    fast, slow = runs
    np.testing.assert_allclose(fast.curve, slow.curve, rtol=2e-3)
    assert fast.curve[-1] < fast.curve[0]


def test_same_seed_same_bits_on_cuda():
    s = TrainSettings.tiny(steps=200, device=DEV, batch_size=64)
    a, b = train(CONFIG, s), train(CONFIG, s)
    assert a["device"].startswith("cuda")
    assert a["loss"] == b["loss"] and a["final weights sha256"] == b["final weights sha256"]


LONG_ARGS = ["--steps", "4000", "--batch-size", "64", "--history", "100", "--device", DEV, "--threads", "1",
             "--checkpoint-every", "100", "--val-streams", "16", "--eval-every", "2000"]


def test_sigkill_and_resume_on_cuda_gives_the_uninterrupted_result(tmp_path):
    settings = TrainSettings(steps=4000, batch_size=64, history=100, device=DEV, checkpoint_every=100,
                             val_streams=16, eval_every=2000)
    want = train(CONFIG, settings)
    write_configs(tmp_path, [CONFIG])
    w = start_worker(*LONG_ARGS, cwd=tmp_path, name="victim")
    ckpt = tmp_path / "results_01_all/checkpoints" / f"{CONFIG.id}.pt"
    wait_for(ckpt.exists, timeout=300, what="a first checkpoint")
    w.send_signal(signal.SIGKILL)
    w.wait()
    heir = start_worker(*LONG_ARGS, cwd=tmp_path, name="heir")
    assert heir.wait(timeout=600) == 0
    got = results(tmp_path)[CONFIG.id]
    assert got["resumes"] == 1 and got["device"].startswith("cuda")
    assert got["loss"] == want["loss"] and got["val loss"] == want["val loss"]
    assert got["final weights sha256"] == want["final weights sha256"]


def test_device_auto_takes_the_gpu_and_spreads_workers_over_gpus(tmp_path):
    write_configs(tmp_path, [CONFIG, RNNConfig(**{**CONFIG.to_dict(), "state_size": 32})])
    args = [a if a != DEV else "auto" for a in LONG_ARGS]
    args[1] = "300"
    proc = script("training_01_all.py", "--workers", "2", *args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    devices = sorted(r["device"] for r in results(tmp_path).values())
    n = torch.cuda.device_count()
    if n == 1:
        assert all(d.startswith("cuda") for d in devices), devices
    else:  # the launcher gives worker k the GPU k % n
        assert devices == ["cuda:0", "cuda:1"], devices


@pytest.mark.parametrize("n_layers", [1, 2])
def test_a_pack_of_all_96_combinations_equals_their_solo_runs_on_cuda(n_layers):
    """Issue 13 on the GPU, where a pack is one chunk: each member's curve equals its solo
    CUDA run's over 200 steps (never run yet: no GPU was lent when packs were written)."""
    import itertools

    from gatedrnn.spec.config import SWITCHES
    from gatedrnn.training.trainer import train_pack

    combos = [dict(zip(SWITCHES, v)) for v in itertools.product([False, True], repeat=7) if v[4] or v[5]]
    configs = [RNNConfig(**c, n_layers=n_layers, state_size=16) for c in combos]
    settings = TrainSettings(steps=200, batch_size=8, history=40, log_every=10, eval_every=0, val_streams=4,
                             device=DEV)
    for config, packed in zip(configs, train_pack(configs, settings)):
        solo = train(config, settings)
        assert packed["device"].startswith("cuda") and packed["pack"]["size"] == 96
        np.testing.assert_allclose(packed["loss"], solo["loss"], atol=1e-4)
