"""Packs (DESIGN.md, "Packs"): many configurations of one group as one batched step, each
member exactly its own model; claimed, checkpointed and resumed as a unit by real workers."""

import itertools
import json
import signal

import numpy as np
import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.spec.config import SWITCHES
from gatedrnn.models.model import ByteModel
from gatedrnn.models.packed import PackError, PackedModel, pack_group
from gatedrnn.store.queue import Queue
from gatedrnn.training.rules import flatten_parameters
from gatedrnn.training.trainer import train_pack
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
    # a swept input map changes the parameters' shapes: its values are separate groups
    linear, normal = (RNNConfig(**COMBOS[0], n_layers=2, state_size=6, input_init=v) for v in ("linear", "normal"))
    assert len({pack_group(linear), pack_group(normal), pack_group(configs[0])}) == 3
    with pytest.raises(PackError, match="input_init"):
        PackedModel([linear, normal])


@pytest.mark.parametrize("chunk, init", [(None, "linear"), (7, "linear"), (7, "normal")])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_one_packed_step_gives_each_member_its_solo_loss_states_and_gradients(n_layers, chunk, init):
    """Both input maps: the original's Linear (a bias per member) and the N(0, 1) table."""
    torch.manual_seed(0)
    configs = group(n_layers)
    solos = []
    for config in configs:
        model = ByteModel(config, input_init=init)
        assert ("embedding.bias" in model.state_dict()) == (init == "linear")
        flatten_parameters(model)
        solos.append(model)
    pack = PackedModel(configs, chunk=chunk, input_init=init)
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
