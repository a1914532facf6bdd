"""The figures (gatedrnn/plots.py), drawn from results tables made by the test."""

import numpy as np
import pandas as pd
import pytest

from gatedrnn import RNNConfig
from gatedrnn.spec.config import CONFIG_KEYS, SWITCHES
from gatedrnn.analysis.plots import plot_curves, plot_hyperparameters, save
from gatedrnn.analysis.effects import effects, interactions


def table(seeds=(0, 1)) -> pd.DataFrame:
    """Runs of four configurations differing in the forget gate and the state size."""
    rows = []
    for forget in (False, True):
        for d in (16, 32):
            c = RNNConfig(False, forget, False, False, True, False, True, n_layers=1, state_size=d)
            for seed in seeds:
                loss = 2.5 - 0.2 * forget - 0.001 * d + 0.01 * seed
                rows.append({**c.to_dict(), "id": f"{c.id[:60]}{seed:04d}", "config id": c.id, "seed": seed,
                             "status": "done", "loss": list(np.linspace(3.0, loss, 10)), "min loss": loss,
                             "val loss": loss + 0.05, "log every": 50, "training steps": 500})
    return pd.DataFrame(rows)


def test_the_curves_show_one_line_per_configuration_and_a_band_for_replicates():
    fig = plot_curves(table(), "val loss", threshold=2.3, references={"trigram": 2.2})
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 5 and any("mean of 2" in t for t in texts)  # four configurations, the threshold
    assert len(ax.collections) == 4  # a band each
    assert "8 runs of 4 configurations" in ax.get_title()


def test_the_hyperparameter_figure_has_a_strip_and_an_effect_panel_per_key(tmp_path):
    df = table()
    eff, _ = effects(df, "val loss", list(CONFIG_KEYS))
    fig = plot_hyperparameters(df, "val loss", "title", eff)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2 * len(CONFIG_KEYS)
    titles = [ax.get_title() for ax in visible]
    assert titles.count("matched-pair effect, 95 % CI") == len(CONFIG_KEYS)
    assert all(s.replace("use_", "").replace("_", " ") in titles for s in SWITCHES)
    save(fig, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    # both the median (circle) and the mean (diamond) of each step are drawn
    markers = [line.get_marker() for ax in visible for line in ax.get_lines()]
    assert markers.count("o") == markers.count("D") == len(eff) == 2  # forget gate, state size


def test_the_hyperparameter_figure_maps_the_two_way_interactions():
    df = table()
    eff, _ = effects(df, "val loss")
    inter = interactions(df, "val loss")
    assert len(inter)
    fig = plot_hyperparameters(df, "val loss", "title", eff, interactions=inter)
    heat = [ax for ax in fig.axes if ax.get_title().startswith("two-way interactions")]
    assert len(heat) == 1 and len(heat[0].images) == 1
    image = heat[0].images[0].get_array()
    first = inter.drop_duplicates(["a", "b"]).iloc[0]
    labels = [t.get_text() for t in heat[0].get_xticklabels()]
    i = labels.index(first["a"].replace("use_", "").replace("_", " "))
    j = labels.index(first["b"].replace("use_", "").replace("_", " "))
    assert image[j, i] == pytest.approx(first["interaction"])


def test_the_value_axes_span_the_runs_and_references_outside_are_marks_on_the_edge():
    df = table()  # val loss from 2.318 to 2.544, curves from 3.0 down
    fig = plot_hyperparameters(df, "val loss", "t", reference={"unigram": 3.3, "trigram": 1.7, "mid": 2.4})
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 2.1 < lo < df["val loss"].min() and df["val loss"].max() < hi < 2.6
    texts = [t.get_text() for t in ax.texts]
    assert "▲ unigram 3.300" in texts and "▼ trigram 1.700" in texts and "mid 2.400" in texts
    curves = plot_curves(df, "val loss", threshold=1.0, references={"unigram": 9.0}).axes[0]
    lo, hi = curves.get_ylim()
    assert lo > 2.0 and hi < 3.2  # the runs' range (2.268 .. 3.0), not the references'
    marks = [t.get_text() for t in curves.texts]
    assert "▼ threshold 1.000" in marks and "▲ unigram 9.000" in marks
