"""summary.md (gatedrnn/report.py): its sections, from tables made by the test."""

import numpy as np
import pandas as pd

from gatedrnn import RNNConfig
from gatedrnn.analysis.report import Report, md_table, summary_document, task_section


def runs() -> pd.DataFrame:
    rows = []
    for k, forget in enumerate((False, True)):
        c = RNNConfig(False, forget, False, False, True, False, True, n_layers=1, state_size=16)
        for seed in (0, 1):
            loss = 2.0 - 0.3 * forget + 0.01 * seed
            rows.append({**c.to_dict(), "id": c.id, "config id": c.id, "seed": seed, "status": "done",
                         "loss": [3.0, loss], "min loss": loss, "val loss": loss, "log every": 50})
    return pd.DataFrame(rows)


def test_a_task_section_says_how_sure_the_ranking_is_and_lists_the_runs_below():
    df = runs()
    ranked = pd.DataFrame([{"id": df["config id"].iloc[2], "runs": 2, "val loss mean": 1.705,
                            "val loss ci low": 1.64, "val loss ci high": 1.77}])
    report = Report(runs=4, status=None, best={"label": "x", "val loss": 1.705, "ci low": 1.64, "ci high": 1.77,
                                               "runs": 2, "id": "abc"}, below=2, metric="val loss")
    below = df[df["val loss"] < 1.9]
    md = task_section(df, df, ranked, below, report, 1.9, None, df.iloc[:0], None)
    assert "## How sure is the ranking" in md and "95 % CI 1.6400, 1.7700" in md
    assert "Seed noise: unknown" in md and "## Runs with val loss below 1.9: 2" in md
    assert "Linear model: too few runs" in md  # four runs
    assert task_section(df, df.iloc[:0], ranked, below, report, 1.9, None, df.iloc[:0], None).strip() == \
        "No finished run with a 'val loss' yet."


def test_the_document_has_a_section_per_task_when_there_are_several():
    report = Report(runs=3, status={"done": 3, "diverged": 0, "failed": 0, "running": 0, "pending": 1},
                    best=None, below=0, messages=["a note"])
    one = summary_document("res", report, [("bytes", "BYTES")])
    assert "done 3 · diverged 0 · failed 0 · running 0 · pending 1 (of 4)" in one and "- a note" in one
    assert "## Task:" not in one and one.endswith("BYTES")
    two = summary_document("res", report, [("bytes", "B"), ("copy (length 5)", "C")])
    assert "## Task: copy (length 5)" in two and "2 tasks" in two


def test_a_markdown_table_formats_floats_and_leaves_nan_empty():
    text = md_table(pd.DataFrame({"a": [1.234567, np.nan], "b": ["x", "y"]}))
    assert text.splitlines()[2] == "| 1.2346 | x |" and text.splitlines()[3] == "|  | y |"
