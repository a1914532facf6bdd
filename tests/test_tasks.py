"""The memory tasks (gatedrnn/tasks.py): generators, targets, chance levels, training through the
one loop with every cell kind and truncation, resume, grid, init, analysis and the tools."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gatedrnn.spec.config import TASK_KEYS, RNNConfig, TrainSettings
from gatedrnn.spec.grid import default_grid, read_configs
from gatedrnn.data.tasks import COPY_RECALL, Task, TaskSampler, digits_split, mackey_glass, task_of
from gatedrnn.training.trainer import Interrupted, Run, train

ROOT = Path(__file__).resolve().parents[1]
SWITCHES_ON = dict(use_input_gate=True, use_forget_gate=True, use_output_gate=True, use_state_gate=True,
                   use_new_state=True, use_old_state=True, use_residual=True)
SHORT = {"copy": {"length": 6}, "adding": {"length": 8}, "delayed": {"symbols": 4, "delay": 2, "length": 8},
         "mackey-glass": {"horizon": 1, "length": 10}, "digits": {}}


def task(name: str, **options) -> Task:
    return task_of(RNNConfig(cell="gru", n_layers=1, state_size=8, task=name, **{**SHORT[name], **options}))


def tiny(**changes) -> TrainSettings:
    base = dict(steps=60, batch_size=4, history=20, log_every=10, eval_every=0, checkpoint_every=0,
                device="cpu", val_streams=4)
    base.update(changes)
    return TrainSettings(**base)


# ---------------------------------------------------------------------------- generators
def test_copy_sequences_hold_ten_symbols_a_delimiter_and_their_recall():
    t = task("copy", length=6)
    x, y = t.batch(seed=3, n=5)
    assert x.shape == y.shape == (6 + 20, 5) and t.steps == 26
    assert ((x[:COPY_RECALL] >= 0) & (x[:COPY_RECALL] < 8)).all()
    blank, delimiter = 8, 9
    assert (x[COPY_RECALL + 5] == delimiter).all()  # the last of the T steps
    assert (x[COPY_RECALL:COPY_RECALL + 5] == blank).all() and (x[-COPY_RECALL:] == blank).all()
    assert (y[:-COPY_RECALL] == blank).all()
    assert torch.equal(y[-COPY_RECALL:], x[:COPY_RECALL])  # recall the symbols in order
    assert all(t.mask)


def test_adding_has_one_marker_per_half_and_their_sum_at_the_last_step():
    t = task("adding", length=9)
    x, y = t.batch(seed=1, n=64)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert (markers[:4].sum(0) == 1).all() and (markers[4:].sum(0) == 1).all()
    assert torch.allclose(y[-1], (values * markers).sum(0))
    assert t.mask == (False,) * 8 + (True,)


def test_delayed_targets_are_the_symbols_delay_steps_back():
    t = task("delayed", symbols=5, delay=3, length=12)
    x, y = t.batch(seed=2, n=7)
    assert x.max() < 5 and torch.equal(y[3:], x[:-3])
    assert t.mask == (False,) * 3 + (True,) * 9 and t.outputs == t.inputs == 5


def test_batches_are_reproducible_from_their_seed_and_the_test_set_is_fixed():
    for name in SHORT:
        t = task(name)
        a, b = t.batch(7, 4), t.batch(7, 4)
        assert all(torch.equal(u, v) for u, v in zip(a, b)), name
        assert not torch.equal(t.batch(8, 4)[0], a[0]), name
        assert all(torch.equal(u, v) for u, v in zip(t.test_set(4), t.test_set(4))), name


def test_mackey_glass_is_the_chaotic_series_and_prediction_targets_lie_horizon_ahead():
    series = mackey_glass()
    assert len(series) == 12_500 and 0.2 < series.min() < 0.6 and 1.1 < series.max() < 1.5
    # chaotic, not a fixed point or a short cycle: it never repeats a 20-step stretch closely
    assert np.abs(np.diff(series)).mean() > 0.01
    t = task("mackey-glass", horizon=3, length=10)
    x, y = t.batch(seed=5, n=6)
    assert x.shape == (10, 6, 1) and y.shape == (10, 6)
    s = torch.from_numpy(t.series)
    for j in range(6):  # y is x shifted by the horizon, inside the standardised series
        start = int(torch.nonzero(torch.isclose(s, x[0, j, 0]))[0])
        assert torch.equal(y[:, j], s[start + 3:start + 13])
    xt, _ = t.test_set(4)  # consecutive windows of the continuation after the training part
    assert torch.equal(xt[:, 0, 0], s[10_000:10_010]) and torch.equal(xt[:, 3, 0], s[10_030:10_040])


def test_digits_are_sklearns_images_pixel_by_pixel_with_a_fixed_disjoint_split():
    train_x, train_y, test_x, test_y = digits_split()
    assert len(train_y) + len(test_y) == 1797 and len(test_y) == 360
    assert not {r.tobytes() for r in test_x} <= {r.tobytes() for r in train_x}
    t = task("digits")
    x, y = t.test_set(4)
    assert x.shape == (64, 360, 1) and float(x.max()) <= 1.0
    assert torch.equal(y[-1], torch.from_numpy(test_y)) and (y[:-1] == 0).all()
    assert torch.equal(x[:, 0, 0], torch.from_numpy(test_x[0]))


# ---------------------------------------------------------------------------- chance levels
def test_copy_chance_is_the_memoryless_strategys_cross_entropy():
    t = task("copy", length=30)
    x, y = t.test_set(32)
    # blank with certainty, then uniform over the 8 symbols during the recall
    out = torch.full((t.steps, 32, 9), -1e9)
    out[:-COPY_RECALL, :, 8] = 0.0
    out[-COPY_RECALL:, :, :8] = 0.0
    metrics = t.metrics(out, y)
    assert metrics["cross-entropy"] == pytest.approx(10 * math.log(8) / 50, rel=1e-6)
    assert metrics["cross-entropy"] == pytest.approx(t.chance()["cross-entropy"], rel=1e-6)


def test_adding_chance_is_predicting_one_and_delayed_chance_is_uniform():
    t = task("adding", length=20)
    _, y = t.batch(seed=0, n=20_000)
    mse = float(((y[-1] - 1.0) ** 2).mean())
    assert mse == pytest.approx(1 / 6, abs=0.01) and t.chance()["mse"] == pytest.approx(1 / 6)
    d = task("delayed", symbols=6, delay=2, length=8)
    x, y = d.test_set(16)
    uniform = torch.zeros(6, 16, 6)
    m = d.metrics(uniform, y[d.target_steps])
    assert m["cross-entropy"] == pytest.approx(math.log(6)) == pytest.approx(d.chance()["cross-entropy"])
    assert d.chance()["accuracy"] == pytest.approx(1 / 6)


def test_mackey_glass_reference_is_persistence_on_the_held_out_continuation():
    t = task("mackey-glass", horizon=2, length=10)
    x, y = t.test_set(8)
    direct = float(((x[..., 0].double() - y.double()) ** 2).mean())
    assert t.chance(8)["mse"] == pytest.approx(direct)
    assert t.chance(8)["nrmse"] == pytest.approx(math.sqrt(direct) / float(y.double().std()))


# ---------------------------------------------------------------------------- configuration and grid
def test_a_task_and_its_keys_enter_the_id_and_bytes_ids_are_unchanged():
    grid = default_grid()
    committed = read_configs(ROOT / "rnn_configs.json")
    assert [c.id for c in grid] == [e["id"] for e in committed]
    c = RNNConfig(cell="gru", n_layers=1, state_size=8, task="delayed")
    assert c.to_dict() == {"cell": "gru", "n_layers": 1, "state_size": 8, "task": "delayed", **TASK_KEYS["delayed"]}
    assert RNNConfig.from_dict(c.to_dict(with_id=True)) == c
    assert RNNConfig(cell="gru", n_layers=1, state_size=8).id != c.id


@pytest.mark.parametrize("bad, message", [
    (dict(task="memory"), "task must be one of"),
    (dict(task="delayed", delay=50, length=50), "must be shorter than the sequence"),
    (dict(task="copy", length=0), "length must be >= 1"),
    (dict(task="copy", delay=3), "unknown configuration key 'delay' for task 'copy'"),
    (dict(task="mackey-glass", length=2500, horizon=1), "held-out continuation"),
])
def test_bad_task_keys_are_refused_naming_the_key(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RNNConfig.from_dict({"cell": "gru", "n_layers": 1, "state_size": 8, **bad})


def test_init_crosses_tasks_and_their_keys_and_refuses_bad_ones_in_one_line(tmp_path):
    def init(*args):
        return subprocess.run([sys.executable, str(ROOT / "init_experiments.py"), *args], cwd=tmp_path,
                              capture_output=True, text=True)

    r = init("--tasks", "bytes", "copy", "adding", "delayed", "mackey-glass", "digits", "--task-keys",
             "length=10,20", "--layers", "1", "--state-sizes", "32", "--cells", "gated", "gru")
    assert r.returncode == 0, r.stderr
    configs = read_configs(tmp_path / "rnn_configs.json")
    per_arch = 48 + 1  # gated with residual at state 32, and gru
    # bytes and digits once, copy/adding/delayed/mackey-glass once per length
    assert len(configs) == per_arch * (2 + 4 * 2)
    assert {(c.get("task", "bytes"), c.get("length")) for c in configs} >= {("copy", 10), ("copy", 20), ("bytes", None)}
    before = (tmp_path / "rnn_configs.json").read_bytes()
    for args, words in [(("--tasks", "copy", "sorting"), "unknown task 'sorting'"),
                        (("--tasks", "delayed", "--task-keys", "delay=50"), "delay 50 must be shorter"),
                        (("--tasks", "copy", "--task-keys", "length=0"), "length must be >= 1"),
                        (("--tasks", "copy", "--task-keys", "horizon=2"), "--task-keys horizon")]:
        r = init(*args)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (tmp_path / "rnn_configs.json").read_bytes() == before
    bad = [{"cell": "gru", "n_layers": 1, "state_size": 8, "task": "delayed", "symbols": 8, "delay": 9, "length": 9}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = subprocess.run([sys.executable, str(ROOT / "training_01_all.py"), "--config-file", "bad.json"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "bad.json: entry 0" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- training
def config(cell: str, name: str, bptt: int = 1, **extra) -> RNNConfig:
    switches = SWITCHES_ON if cell == "gated" else {}
    return RNNConfig(cell=cell, n_layers=2 if cell == "gated" else 1, state_size=8, bptt=bptt, task=name,
                     **{**SHORT[name], **extra}, **switches)


CELL_CASES = [("gated", {}), ("gru", {}), ("lstm", {}), ("rnn", {}), ("esgp", {}), ("esn", {}),
              ("esn", {"readout": "ridge"})]


@pytest.mark.parametrize("name", list(SHORT))
@pytest.mark.parametrize("cell, extra", CELL_CASES, ids=[c + "".join(e.values()) for c, e in CELL_CASES])
def test_every_cell_trains_on_every_task_and_records_steps_updates_and_chance(cell, extra, name):
    for bptt in ([1] if extra else [1, 64]):  # 64 covers every sequence here
        t = task_of(config(cell, name, bptt, **extra))
        r = train(config(cell, name, bptt, **extra), tiny(steps=t.steps + 2))
        assert r["status"] == "done" and r["task"] == name and r["time steps"] == t.steps + 2
        targets = sum(t.mask) + t.mask[0] + t.mask[1]
        if extra:  # the ridge readout: one solve per log point and at the end
            assert r["optimizer updates"] == (t.steps + 2) // 10 + ((t.steps + 2) % 10 > 0)
        elif bptt == 1:  # one update per step with a target
            assert r["optimizer updates"] == targets
        else:  # one per sequence, and one for the two steps of the next (if they have a target)
            assert r["optimizer updates"] == 1 + (t.mask[0] or t.mask[1])
        assert set(r["test metrics"]) == set(r["chance"]) == set(r["val metrics"]) and math.isfinite(r["val loss"])
        # selection on the validation set, the report on the test set: two sets, two numbers
        assert r["val loss"] == r["val metrics"][t.loss_name] and r["test loss"] == r["test metrics"][t.loss_name]
        assert r["val loss"] != r["test loss"]


@pytest.mark.parametrize("cell, name, bptt, extra", [
    ("gated", "copy", 1, {}), ("gru", "adding", 4, {}), ("lstm", "delayed", 1, {}),
    ("gated", "mackey-glass", 3, {}), ("esn", "digits", 1, {"readout": "ridge"}), ("gru", "digits", 1, {}),
])
def test_a_stopped_task_run_resumes_bit_identically(tmp_path, cell, name, bptt, extra):
    c = config(cell, name, bptt, **extra)
    settings = tiny(steps=150, checkpoint_every=25, eval_every=50)
    whole = train(c, settings)
    ckpt = tmp_path / "run.pt"
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 37  # mid-sequence, mid-chunk

    with pytest.raises(Interrupted):
        train(c, settings, checkpoint=ckpt, should_stop=stop)
    resumed = train(c, settings, checkpoint=ckpt)
    assert resumed["resumes"] == 1
    for key in ("loss", "val curve", "test metrics", "final weights sha256", "optimizer updates", "curve start"):
        assert resumed[key] == whole[key], key


def test_a_tiny_mackey_glass_run_learns_to_predict_the_next_value():
    # one step ahead from the current value is learnable without memory: the loss must fall
    r = train(config("gru", "mackey-glass"), tiny(steps=600, batch_size=16, log_every=20))
    assert r["loss"][-1] < 0.2 * r["loss"][0]
    assert r["test metrics"]["mse"] < 0.1  # the series is standardised: predicting its mean scores ~1


def test_a_task_run_is_never_packed_and_sample_refuses_it(tmp_path):
    from gatedrnn.store.folder import ResultsFolder
    from gatedrnn.models.packed import pack_group
    from gatedrnn.cli.tools import ToolError, sample

    c = config("gated", "copy")
    assert pack_group(c) is None and pack_group(RNNConfig(**SWITCHES_ON, n_layers=1, state_size=8)) is not None
    folder = ResultsFolder(tmp_path)
    folder.weights_dir.mkdir(parents=True)
    r = train(c, tiny(steps=30), weights=folder.weights(c.id))
    (tmp_path / f"{c.id}.json").write_text(json.dumps(r))
    with pytest.raises(ToolError, match="copy task, not next-byte prediction"):
        sample(c.id, tmp_path)


def test_the_task_sampler_restores_its_stream():
    t = task("delayed")
    a = TaskSampler(t, 3, seed=11, device="cpu")
    a.next_offsets()
    state = a.state_dict()
    nxt = a.next_offsets()
    b = TaskSampler(t, 3, seed=99, device="cpu")
    b.load_state_dict(state)
    assert torch.equal(b.next_offsets(), nxt)
    assert all(torch.equal(u, v) for u, v in zip(a.window(nxt), b.window(nxt)))


def test_a_run_starts_its_curve_at_the_first_log_point_after_a_target():
    c = config("gru", "adding", length=30)
    run = Run(c, tiny(steps=90))
    run.train_steps(90)
    assert run.curve_start == 30 and len(run.curve) == 7  # log points 30, 40, ..., 90
    assert run.updates == 3


# ---------------------------------------------------------------------------- analysis
def _task_record(cfg: RNNConfig, loss: float, seed: int, chance: float) -> dict:
    t = task_of(cfg)
    name = t.loss_name
    metrics = {name: loss, **({"accuracy": 0.5} if name == "cross-entropy" and cfg.task != "copy" else {})}
    chance_levels = {name: chance, **({"accuracy": 0.125} if "accuracy" in metrics else {})}
    return {**cfg.to_dict(with_id=True), "status": "done", "loss": [loss + 0.1, loss], "min loss": loss,
            "val loss": loss, "seed": seed, "log every": 10, "training steps": 20, "task label": t.label,
            "loss kind": name, "test metrics": metrics, "chance": chance_levels, "time steps": 20,
            "optimizer updates": 20, "dataset": t.label}


def test_examine_ranks_each_task_on_its_own_with_its_chance_line(tmp_path):
    from gatedrnn.analysis.examine import examine

    results = tmp_path / "results"
    results.mkdir()
    rng = np.random.default_rng(0)
    for cfg in default_grid(state_sizes=[32], layers=[1], seeds=[0, 1], tasks=["delayed", "adding"],
                            task_keys={"length": [10], "delay": [3]}):
        # the forget gate lowers the delayed task's loss; adding losses sit far below it
        base = 2.0 - 0.5 * cfg.use_forget_gate if cfg.task == "delayed" else 0.1
        loss = base + float(rng.normal(0, 0.01))
        chance = math.log(8) if cfg.task == "delayed" else 1 / 6
        (results / f"{cfg.id}.json").write_text(json.dumps(_task_record(cfg, loss, cfg.seed, chance)))
    report = examine(results, tmp_path / "out")
    assert set(report.tasks) == {"delayed (symbols 8, delay 3, length 10)", "adding (length 10)"}
    delayed = report.tasks["delayed (symbols 8, delay 3, length 10)"]
    assert delayed.best["use_forget_gate"] and delayed.chance == pytest.approx(math.log(8))
    assert report.tasks["adding (length 10)"].best[delayed.metric] < 0.2
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## Task: delayed (symbols 8, delay 3, length 10)" in md and "## Task: adding (length 10)" in md
    assert "Below the chance level (2.0794): 48 of 48 configurations by their mean" in md
    effects = pd.read_csv(tmp_path / "out" / "effects.csv")
    assert list(effects.columns[:2]) == ["task", "hyperparameter"]
    forget = effects[(effects["task"].str.startswith("delayed")) & (effects["hyperparameter"] == "use_forget_gate")]
    assert forget["median difference"].iloc[0] == pytest.approx(-0.5, abs=0.05) and forget["ci high"].iloc[0] < 0
    adding_forget = effects[(effects["task"] == "adding (length 10)") & (effects["hyperparameter"] == "use_forget_gate")]
    assert abs(adding_forget["median difference"].iloc[0]) < 0.05  # no pair crosses tasks
    for name in ("results_01_all_delayed_symbols_8_delay_3_length_10.png",
                 "results_01_all_adding_length_10_hyperparameters.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(summary["runs"]) == {2} and "accuracy mean" in summary


@pytest.mark.parametrize("name", ["copy", "adding", "delayed", "mackey-glass", "digits"])
def test_validation_and_test_sets_are_disjoint_and_tail_keeps_the_old_held_out_set(name):
    t = task_of(config("gated", name, 1))
    val, test = t.heldout_set("val", 64), t.heldout_set("test", 64)
    assert val[0].shape[1] >= 1 and test[0].shape[1] >= 1
    columns = lambda x: {tuple(c.flatten().tolist()) for c in x.transpose(0, 1)}  # noqa: E731
    assert not columns(val[0]) & columns(test[0])  # no sequence (window, image) in both
    old = t.test_set(64)
    legacy = t.heldout_set("val", 64, "tail")
    assert torch.equal(legacy[0], old[0]) and t.heldout_set("test", 64, "tail") is None
