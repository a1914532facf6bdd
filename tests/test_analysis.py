from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from gatedrnn import results
from gatedrnn.analysis.examine import examine, filtered_name, linear_model, plot_hyperparameters
from gatedrnn.data.corpus import load_corpus
from helpers import script
from synthetic import make_results


def png_ok(path, min_bytes=20_000):
    """A real, non-trivial PNG: the signature, a sane size, and more than one colour."""
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes, path
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50  # not a blank canvas
    return img


def points_per_panel(fig):
    return [sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
            for ax in fig.axes if ax.get_visible()]


def test_examine_writes_every_output_for_a_full_sweep(tmp_path):
    res = tmp_path / "res"
    recs = make_results(res, n=432, original=100, sha=load_corpus().sha256)
    out = tmp_path / "out"
    report = examine(res, out, threshold=2.05)
    for name in ["results_01_all.png", "results_01_all_hyperparameters.png", filtered_name(2.05)]:
        png_ok(out / name)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 432 and set(summary["id"]) == {r["id"] for r in recs}
    # the 100 original-format files lack val loss: ranked by val loss without them, and named (the
    # metric never switches to min loss because some lack it)
    ours = [r for r in recs if "val loss" in r]
    best = min(ours, key=lambda r: r["val loss"])
    assert report.metric == "val loss" and report.best["id"] == best["id"]
    assert any(m.startswith("100 configuration(s) have no finished run with val loss") for m in report.messages)
    assert report.below == sum(r["val loss"] < 2.05 for r in ours) > 0
    md = (out / "summary.md").read_text()
    assert best["id"][:12] in md and "R² on the" in md
    # the n-gram reference lines of the built-in corpus, cached beside the results
    assert "trigram" in md and list(res.glob(".queue/ngram-*.json"))


def test_filtered_plot_holds_exactly_the_runs_below_the_threshold(tmp_path):
    make_results(tmp_path, n=60)
    df = results.load(tmp_path)
    below = df[df["min loss"] < df["min loss"].median()]
    assert 0 < len(below) < 60
    fig = plot_hyperparameters(below, "min loss", "below")
    assert set(points_per_panel(fig)) == {len(below)}  # every panel shows each of those runs once
    fig_all = plot_hyperparameters(df, "min loss", "all")
    assert set(points_per_panel(fig_all)) == {60}


def test_linear_model_recovers_known_effects(tmp_path):
    make_results(tmp_path, n=432)
    lm = linear_model(results.load(tmp_path), "min loss")
    c = lm["coefficients"]
    # the synthetic metric falls with the forget gate and the residual, rises with depth
    assert c["use_forget_gate"] < -0.1 and c["use_residual"] < -0.03 and c["n_layers"] > 0.01
    assert abs(c["use_input_gate"]) < 0.02
    assert lm["r2 held out"] > 0.8


def test_val_loss_metric_uses_only_runs_that_have_it(tmp_path):
    make_results(tmp_path / "res", n=30, original=10)
    report = examine(tmp_path / "res", tmp_path / "out", metric="val loss")
    df = results.load(tmp_path / "res")
    assert report.best["id"] == df.loc[df["val loss"].idxmin(), "id"]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_empty_one_and_three_run_folders(tmp_path, n):
    res = tmp_path / "res"
    res.mkdir()
    make_results(res, n=n)
    proc = script("examine_results_01_all.py", "--results-dir", res, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "status:" in proc.stdout
    assert (tmp_path / "out/summary.md").exists() and (tmp_path / "out/summary.csv").exists()
    if n == 0:
        assert "no results yet" in proc.stdout
        assert not (tmp_path / "out/results_01_all.png").exists()
    else:
        png_ok(tmp_path / "out/results_01_all.png", min_bytes=10_000)
        assert "best:" in proc.stdout
    # synthetic losses are above 1.9: nothing below the default threshold, said plainly
    if n:
        assert "no run has val loss below 1.9" in proc.stdout  # ranked by val loss: the runs have it
        assert not (tmp_path / "out" / filtered_name(1.9)).exists()


def test_a_missing_folder_is_exit_2(tmp_path):
    proc = script("examine_results_01_all.py", "--results-dir", tmp_path / "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such results folder"


def test_status_comes_from_the_queue_while_workers_train(tmp_path):
    """Pending and running configurations count from rnn_configs.json and live claims."""
    from gatedrnn.spec.grid import default_grid, merge_configs
    from gatedrnn.store.queue import Queue

    res = tmp_path / "results_01_all"
    make_results(res, n=5)
    merge_configs(tmp_path / "rnn_configs.json", default_grid()[:12])
    q = Queue(res)
    q.claim([c.to_dict(with_id=True) for c in default_grid()[:12]], "me")  # this process: live
    proc = script("examine_results_01_all.py", "--config-file", "rnn_configs.json", cwd=tmp_path, check=True)
    assert "done 5 · diverged 0 · failed 0 · running 1 · pending 6 (of 12)" in proc.stdout
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 12 and (summary["status"] == "pending").sum() == 6
    assert (summary["status"] == "running").sum() == 1


def test_examine_opens_its_folder_once(sweep, tmp_path, monkeypatch):
    """Issue 34: examine reads the results folder once (its records, status, settings) and hands
    that down; nothing below it builds the folder again."""
    from gatedrnn.store import folder as folder_module

    roots = []
    original = folder_module.ResultsFolder.__init__

    def counting(self, root):
        roots.append(Path(root).resolve())
        original(self, root)

    monkeypatch.setattr(folder_module.ResultsFolder, "__init__", counting)
    examine(sweep / "results_01_all", tmp_path / "out", config_file=sweep / "rnn_configs.json")
    assert roots.count((sweep / "results_01_all").resolve()) == 1, roots
