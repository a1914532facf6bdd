"""Issue 39: memorisation in sight (each result's validation minimum and generalisation gap, and
examine's account of them), the literature's contiguous split with its whole-split score, and
folders made on the old built-in corpus."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.analysis.references import memorisation_lines
from gatedrnn.cli.main import train_options
from gatedrnn.data.corpus import PYDOC_TOPICS, load_corpus, validation_streams
from gatedrnn.training.run import Run
from helpers import results, script

T, Fa = True, False
CONFIG = RNNConfig(Fa, T, T, Fa, T, T, T, n_layers=1, state_size=32)
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "before-move"


def _plain_loss(model, windows: np.ndarray) -> float:
    """The held-out procedure written out: zero states, each byte read, the next predicted."""
    w = torch.from_numpy(np.asarray(windows, dtype=np.int64))  # (length + 1, streams)
    with torch.no_grad():
        states, total = model.initial_state(w.size(1)), 0.0
        for t in range(w.size(0) - 1):
            out, states = model.step(w[t], states)
            total += float(F.cross_entropy(out, w[t + 1], reduction="sum"))
    return total / ((w.size(0) - 1) * w.size(1))


def test_a_result_records_its_validation_minimum_and_the_gap_measured_by_the_held_out_procedure(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_bytes(load_corpus().data[:40_000].tobytes())
    s = TrainSettings.tiny(steps=600, batch_size=8, history=40, eval_every=100, val_streams=8, data=str(corpus))
    run = Run(CONFIG, s)
    from gatedrnn.training.loop import drive

    drive(run)
    r = run.result()
    curve = r["val curve"]
    assert len(curve) == 6 and r["min val loss"] == min(v for _, v in curve)
    assert r["min val step"] == min(curve, key=lambda p: p[1])[0]
    train_part = validation_streams(run.source.corpus.train, s.history, s.val_streams)
    assert r["train split loss"] == pytest.approx(_plain_loss(run.model, train_part), rel=1e-6)
    assert r["generalisation gap"] == pytest.approx(r["val loss"] - r["train split loss"], abs=1e-12)


def test_a_run_that_reads_its_training_text_many_times_shows_a_gap_that_one_that_cannot_does_not(tmp_path):
    """Known truth: random bytes. A model that has read 600 bytes of random text 100 times over
    has memorised some of it (the training streams score below the held-out ones, which no model
    can predict: ln 256); one trained on text it never repeats cannot."""
    rng = np.random.default_rng(0)
    small = tmp_path / "random.bin"
    small.write_bytes(rng.integers(0, 256, 700, dtype=np.uint8).tobytes())
    s = TrainSettings.tiny(steps=3000, batch_size=16, history=20, val_streams=16, data=str(small), lr=3e-3)
    r = train(RNNConfig(Fa, Fa, T, Fa, T, T, T, n_layers=1, state_size=64), s)
    assert r["epochs"] > 50 and r["generalisation gap"] > 0.3
    assert r["val loss"] > math.log(256) - 0.05  # nothing to learn about held-out random bytes
    big = tmp_path / "random-big.bin"
    big.write_bytes(rng.integers(0, 256, 600_000, dtype=np.uint8).tobytes())
    r2 = train(RNNConfig(Fa, Fa, T, Fa, T, T, T, n_layers=1, state_size=64), s.replace(data=str(big), steps=600))
    assert r2["epochs"] < 0.1 and abs(r2["generalisation gap"]) < 0.05


def _frame(final, minimum, epochs=0.5, gap=0.1):
    rows = []
    for k, (f, m) in enumerate(zip(final, minimum)):
        rows.append({"config id": f"{k:064x}", "status": "done", "val loss": f, "min val loss": m, "epochs": epochs,
                     "min val step": 500 if m < f else 1000, "training steps": 1000, "generalisation gap": gap,
                     "n_layers": 1, "state_size": 32, "use_input_gate": bool(k % 2), "use_forget_gate": bool(k // 2 % 2),
                     "use_output_gate": True, "use_state_gate": False, "use_new_state": True, "use_old_state": True,
                     "use_residual": bool(k // 4 % 2)})
    return pd.DataFrame(rows)


def test_examine_says_when_the_end_and_the_minimum_rank_differently_and_labels_the_minimum_optimistic():
    final = np.linspace(2.0, 2.7, 8)
    overfit = final - np.linspace(0.0, 1.0, 8)  # the later ones fell furthest, then rose most: reversed order
    text = "\n".join(memorisation_lines(_frame(final, overfit, epochs=6.0), "val loss", "##"))
    assert "up to 6.0 times" in text and "Spearman -1.00" in text and "2 of the top 5" in text
    assert "7 of 8 runs had their lowest validation loss before the end" in text
    same = "\n".join(memorisation_lines(_frame(final, final), "min val loss", "##"))
    assert "Spearman +1.00" in same and "5 of the top 5" in same and "optimistic" in same
    assert "at most 0.50 times their training split" in same
    assert memorisation_lines(_frame(final, final).drop(columns=["min val loss", "generalisation gap"]),
                              "val loss", "##") == []  # results made before issue 39


def test_the_split_is_contiguous_for_enwik8_as_shipped_and_windows_otherwise(tmp_path, capsys):
    enwik8 = tmp_path / "enwik8"
    with open(enwik8, "wb") as f:
        f.truncate(100_000_000)  # the size as shipped (sparse: made in no time)
    opts = train_options(["--data", str(enwik8), "--results-dir", str(tmp_path / "r")])
    assert opts.settings.split == "contiguous" and "the literature's 90/5/5" in capsys.readouterr().out
    assert train_options(["--data", str(enwik8), "--split", "windows"]).settings.split == "windows"
    other = tmp_path / "mine.txt"
    other.write_bytes(b"abc" * 1000)
    assert train_options(["--data", str(other)]).settings.split == "windows"
    assert train_options(["--data", str(other), "--split", "contiguous"]).settings.split == "contiguous"


def test_a_contiguous_sweep_scores_the_whole_test_split_in_bits_per_byte(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_bytes(load_corpus().data[:30_000].tobytes())
    s = TrainSettings.tiny(steps=100, batch_size=8, history=30, data=str(corpus), split="contiguous")
    r = train(CONFIG, s)
    test = len(load_corpus(corpus).heldout("test", "contiguous"))
    assert r["test bytes scored (whole split)"] == test - 8
    assert r["test bpb (whole split)"] == pytest.approx(r["test loss (whole split)"] / math.log(2))
    assert 0 < r["test loss (whole split)"] < math.log(256)
    assert "test loss (whole split)" not in train(CONFIG, s.replace(split="windows"))


@pytest.fixture
def old_folder(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "sweep")
    return tmp_path / "sweep"


def test_a_folder_of_the_old_builtin_corpus_is_refused_where_the_interpreter_gives_other_bytes(old_folder):
    settings = old_folder / "results_01_all" / ".queue" / "settings.json"
    record = json.loads(settings.read_text())
    assert record["data"] is None and record["dataset sha256"] == load_corpus(PYDOC_TOPICS).sha256
    record["dataset sha256"] = "cec54c27" + "0" * 56  # as if made under another CPython build
    settings.write_text(json.dumps(record))
    before = {p: p.read_bytes() for p in (old_folder / "results_01_all").rglob("*") if p.is_file()}
    proc = script("training_01_all.py", "--config-file", "rnn_configs.json", "--device", "cpu", cwd=old_folder)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert PYDOC_TOPICS in line and "cec54c27" + "0" * 56 in line and load_corpus(PYDOC_TOPICS).sha256 in line
    after = {p: p.read_bytes() for p in (old_folder / "results_01_all").rglob("*") if p.is_file()}
    assert {p: b for p, b in after.items() if p in before} == before  # nothing written is touched
    assert results(old_folder) and len(results(old_folder)) == 1
