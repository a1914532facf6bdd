"""Packs (DESIGN.md, "Packs"): many configurations of one group as one batched step, each
member exactly its own model; claimed, checkpointed and resumed as a unit by real workers."""

import itertools
import json
import math
import signal

import numpy as np
import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.config import SWITCHES
from gatedrnn.model import ByteModel
from gatedrnn.packed import PackError, PackedModel, pack_group
from gatedrnn.queue import Queue
from gatedrnn.tools import inspect
from gatedrnn.trainer import Interrupted, PackRun, _drive, _flatten_parameters, _saver, train_pack
from helpers import claims, kill, results, start_worker, wait_for, write_configs

COMBOS = [dict(zip(SWITCHES, v)) for v in itertools.product([False, True], repeat=7) if v[4] or v[5]]
SMALL = TrainSettings(steps=200, batch_size=4, history=30, log_every=10, eval_every=0, val_streams=4, device="cpu")


def group(n_layers, d=6):
    return [RNNConfig(**c, n_layers=n_layers, state_size=d) for c in COMBOS]


def test_there_are_96_combinations_and_they_form_one_group():
    configs = group(2)
    assert len(configs) == 96 and len({c.id for c in configs}) == 96
    assert {pack_group(c) for c in configs} == {("gated", 2, 6)}
    assert pack_group(RNNConfig(cell="gru", n_layers=2, state_size=6)) is None
    assert pack_group(RNNConfig(**COMBOS[0], n_layers=2, state_size=6, bptt=4)) is None
    with pytest.raises(PackError, match="same n_layers"):
        PackedModel([group(1)[0], group(2)[0]])


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_one_packed_step_gives_each_member_its_solo_loss_states_and_gradients(n_layers, chunk):
    torch.manual_seed(0)
    configs = group(n_layers)
    solos = []
    for config in configs:
        model = ByteModel(config)
        _flatten_parameters(model)
        solos.append(model)
    pack = PackedModel(configs, chunk=chunk)
    for k, model in enumerate(solos):
        pack.load_member(k, model.state_dict())
    x, y = torch.randint(0, 256, (5,)), torch.randint(0, 256, (5,))
    states = [torch.randn(len(configs), 5, 6) for _ in range(n_layers)]
    loss, new = pack.train_step(x, y, states)
    for k, model in enumerate(solos):
        solo_loss, solo_new = model.train_step(x, y, [s[k].clone() for s in states])
        torch.testing.assert_close(loss[k], solo_loss, rtol=1e-5, atol=1e-6)
        for a, b in zip(new, solo_new):
            torch.testing.assert_close(a[k], b, rtol=1e-5, atol=1e-6)
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(pack.member_flat(k, pack.flat.grad), grad, rtol=1e-4, atol=1e-6)
        assert all(torch.equal(pack.member_state(k)[name], value) for name, value in model.state_dict().items())
    # every place no member owns holds zero, and gets a zero gradient: Adam never moves it
    owned = sum(sum(p.numel() for p in m.parameters()) for m in solos)
    assert int((pack.flat != 0).sum()) == owned
    assert int((pack.flat.grad != 0).sum()) <= owned


@pytest.mark.parametrize("n_layers", [1, 2])
def test_each_member_trains_as_its_solo_run_for_all_96_combinations(n_layers):
    configs = group(n_layers)
    packed = train_pack(configs, SMALL)
    assert [r["id"] for r in packed] == [c.id for c in configs]
    worst = 0.0
    for config, result in zip(configs, packed):
        solo = train(config, SMALL)
        assert result["status"] == solo["status"] == "done"
        assert len(result["loss"]) == len(solo["loss"]) == 20  # 200 steps, a point every 10
        worst = max(worst, float(np.max(np.abs(np.subtract(result["loss"], solo["loss"])))))
        assert result["val loss"] == pytest.approx(solo["val loss"], rel=1e-5)
        assert result["parameters"] == solo["parameters"]
        assert result["pack"]["size"] == 96 and result["training steps"] == 200
    assert worst < 1e-5, worst


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
    _drive(run, _saver(run, None, None), None, None)
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


def test_a_pack_claim_is_all_or_none_and_skips_what_is_taken_or_has_failed(tmp_path):
    configs = [c.to_dict(with_id=True) for c in group(1, d=8)[:6]]
    (tmp_path / "r").mkdir()
    q = Queue(tmp_path / "r")
    one = q.claim(configs[:1], "solo")
    q.fail(q.claim(configs[1:2], "solo"), "boom")  # raised once: retried alone, never packed
    grouper = lambda c: pack_group(RNNConfig.from_dict(c))  # noqa: E731
    job = q.claim_pack(configs, "packer", 3, grouper)
    taken = [c.id for c in job.claims]
    assert taken == [c["id"] for c in configs[2:5]]
    recs = q.claims()
    assert all(recs[cid]["pack"] == job.id for cid in taken) and one.id in recs
    assert json.loads(q.folder.pack_record(job.id).read_text())["members"] == sorted(taken)
    assert q.claim_pack(configs, "other", 3, grouper) is None  # one left: not a pack
    assert q.claim_pack(configs, "other", 3, lambda c: None) is None


def _pack_worker(tmp_path, name, *extra):
    return start_worker(*PACK_ARGS, *extra, cwd=tmp_path, name=name)


PACK_ARGS = ["--steps", "600", "--batch-size", "4", "--history", "30", "--device", "cpu", "--checkpoint-every", "50",
             "--log-every", "25", "--eval-every", "300", "--val-streams", "4", "--threads", "1"]
PACK_SETTINGS = TrainSettings(steps=600, batch_size=4, history=30, device="cpu", checkpoint_every=50, log_every=25,
                              eval_every=300, val_streams=4)


@pytest.fixture(scope="module")
def pack_configs():
    return group(2, d=8)[::16]  # 6 members of one group


@pytest.fixture(scope="module")
def uninterrupted_pack(pack_configs):
    torch.set_num_threads(1)
    return {r["id"]: r for r in train_pack(pack_configs, PACK_SETTINGS)}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_packed_worker_resumes_its_pack_bit_identically(tmp_path, pack_configs, uninterrupted_pack, sig):
    write_configs(tmp_path, pack_configs)
    proc = _pack_worker(tmp_path, "a", "--pack", "6")
    wait_for(lambda: (tmp_path / "results_01_all/checkpoints").glob("pack-*.pt") and
             any((c.get("progress") or {}).get("step", 0) >= 100 for c in claims(tmp_path)),
             what="a pack checkpoint")
    kill(proc, sig)
    assert len(claims(tmp_path)) == (6 if sig == signal.SIGKILL else 0)  # SIGINT releases all six
    proc = _pack_worker(tmp_path, "b", "--pack", "6")
    assert proc.wait(timeout=300) == 0
    done = results(tmp_path)
    assert set(done) == set(uninterrupted_pack)
    packs = {r["pack"]["id"] for r in done.values()}
    assert len(packs) == 1 and all(r["pack"]["size"] == 6 for r in done.values())
    for cid, r in done.items():
        assert r["resumes"] == 1
        assert r["final weights sha256"] == uninterrupted_pack[cid]["final weights sha256"]
        assert r["loss"] == uninterrupted_pack[cid]["loss"]
    assert claims(tmp_path) == []
    assert not list((tmp_path / "results_01_all/checkpoints").iterdir())  # the pack's checkpoint is gone
    assert not list((tmp_path / "results_01_all/.queue/packs").iterdir())


@pytest.mark.slow
def test_packed_and_solo_workers_share_a_sweep(tmp_path, pack_configs, uninterrupted_pack):
    write_configs(tmp_path, pack_configs)
    packer = _pack_worker(tmp_path, "p", "--pack", "6")
    wait_for(lambda: list((tmp_path / "results_01_all/checkpoints").glob("pack-*.pt")), what="a pack checkpoint")
    kill(packer)
    # a solo worker and a packed one finish the interrupted pack between them
    solo = _pack_worker(tmp_path, "s", "--pack", "1", "--max-runs", "2")
    wait_for(lambda: any(c["worker"] == "s" for c in claims(tmp_path)), what="the solo worker's claim")
    packer = _pack_worker(tmp_path, "q", "--pack", "6")
    assert solo.wait(timeout=300) in (0, 3) and packer.wait(timeout=300) == 0
    done = results(tmp_path)
    assert set(done) == set(uninterrupted_pack)
    assert all(r["status"] == "done" and r["training steps"] == 600 and r["resumes"] >= 1 for r in done.values())
    alone = [r for r in done.values() if "pack" not in r]
    assert alone, "the solo worker finished no member"
    for cid, r in done.items():
        np.testing.assert_allclose(r["loss"], uninterrupted_pack[cid]["loss"], atol=1e-4)
    assert claims(tmp_path) == []


def test_members_with_their_own_seeds_read_their_own_data_and_start_from_their_own_weights():
    base = group(1)[5]
    configs = [RNNConfig.from_dict({**base.to_dict(), "seed": seed}) for seed in (3, 1, 3, 2)]
    configs[2] = RNNConfig.from_dict({**group(1)[60].to_dict(), "seed": 3})
    settings = TrainSettings(steps=60, batch_size=4, history=25, log_every=10, val_streams=4, device="cpu")
    for config, result in zip(configs, train_pack(configs, settings)):
        solo = train(config, settings)
        assert result["seed"] == solo["seed"] == config.seed
        np.testing.assert_allclose(result["loss"], solo["loss"], atol=1e-5)


def test_progress_shows_a_pack_as_one_line_with_its_best_member():
    from gatedrnn.worker import format_status

    running = [{"id": "a" * 64, "worker": "w0", "pack": "p1", "progress": {"step": 10, "loss": 2.5,
                                                                          "steps per second": 100}},
               {"id": "b" * 64, "worker": "w0", "pack": "p1", "progress": {"step": 10, "loss": 2.1,
                                                                          "steps per second": 100}},
               {"id": "c" * 64, "worker": "w1", "progress": {"step": 5, "loss": 3.0, "steps per second": 50}}]
    status = {"counts": {"done": 0, "diverged": 0, "failed": 0, "running": 3, "pending": 0}, "total": 3,
              "running": running}
    lines = format_status(status, 100, {"a" * 64: "IFOSNPR L1 d32", "c" * 64: "....N.R L2 d8"})
    assert len(lines) == 3
    assert "pack of 2 (L1 d32)" in lines[1] and "best loss 2.1000" in lines[1]
    assert "....N.R L2 d8" in lines[2] and "loss 3.0000" in lines[2]
