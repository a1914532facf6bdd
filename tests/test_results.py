"""Reading a results folder into pandas (gatedrnn.analysis.results)."""

import json

import pytest

from gatedrnn import results
from synthetic import make_results


def test_load_reads_both_formats_and_skips_foreign_files(tmp_path):
    recs = make_results(tmp_path, n=20, original=8)
    (tmp_path / "half.json").write_text('{"use_input_gate": tru')
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(RuntimeWarning) as caught:
        df = results.load(tmp_path)
    names = " ".join(str(w.message) for w in caught)
    assert "half.json" in names and "foreign.json" in names
    assert len(df) == 20 and set(df["id"]) == {r["id"] for r in recs}
    originals = df[df["dataset"] == "enwik8"]
    assert len(originals) == 8 and (originals["status"] == "done").all() and originals["val loss"].isna().all()
    assert df["min loss"].tolist() == pytest.approx([r["min loss"] for r in sorted(recs, key=lambda r: r["id"])])
