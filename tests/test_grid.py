import json

import pytest

from gatedrnn.analysis.stages import refine
from gatedrnn.spec.grid import ConfigFileError, default_grid, merge_configs, read_configs
from helpers import script


def test_init_writes_the_default_grid_and_the_results_folder(tmp_path):
    proc = script("init_experiments.py", cwd=tmp_path, check=True)
    entries = json.loads((tmp_path / "rnn_configs.json").read_text())
    assert len(entries) == 432 and (tmp_path / "results_01_all").is_dir()
    assert [e["id"] for e in entries] == [c.id for c in default_grid()]
    assert "432 configurations (432 new)" in proc.stdout


def test_init_is_idempotent_and_only_appends(tmp_path):
    script("init_experiments.py", "--layers", "1", cwd=tmp_path, check=True)
    f = tmp_path / "rnn_configs.json"
    first = f.read_bytes()
    mtime = f.stat().st_mtime_ns
    script("init_experiments.py", "--layers", "1", cwd=tmp_path, check=True)
    assert f.read_bytes() == first and f.stat().st_mtime_ns == mtime  # not even rewritten
    script("init_experiments.py", "--layers", "1", "2", cwd=tmp_path, check=True)
    old, new = json.loads(first), json.loads(f.read_text())
    assert new[: len(old)] == old and len(new) == 2 * len(old)


def test_input_inits_cross_every_configuration_it_applies_to(tmp_path):
    """``--input-inits`` gives each configuration an ``input_init`` key (part of its id), like
    ``--lrs``; the ESN (a fixed input map) and real-valued tasks enter once, without it; the
    default grid's ids are untouched."""
    script("init_experiments.py", "--layers", "1", "--state-sizes", "32", "--cells", "gated", "esn", "--tasks",
           "bytes", "adding", "--input-inits", "linear", "normal", cwd=tmp_path, check=True)
    entries = json.loads((tmp_path / "rnn_configs.json").read_text())
    gated_bytes = [e for e in entries if "cell" not in e and "task" not in e]
    assert len(gated_bytes) == 96 and {e["input_init"] for e in gated_bytes} == {"linear", "normal"}
    assert all("input_init" not in e for e in entries if e.get("cell") == "esn" or e.get("task") == "adding")
    assert len({e["id"] for e in entries}) == len(entries)
    plain = {c.id for c in default_grid(state_sizes=[32], layers=[1])}
    assert plain.isdisjoint(e["id"] for e in gated_bytes)  # a swept input map is part of the id
    assert {json.dumps({k: v for k, v in e.items() if k not in ("id", "input_init")}, sort_keys=True)
            for e in gated_bytes} == {json.dumps(c.to_dict(), sort_keys=True) for c in default_grid([32], [1])}


def test_seeds_give_one_entry_per_seed(tmp_path):
    script("init_experiments.py", "--layers", "1", "--state-sizes", "32", "--seeds", "0", "1",
           "--config-file", "s.json", cwd=tmp_path, check=True)
    entries = json.loads((tmp_path / "s.json").read_text())
    assert len(entries) == 96 and {e["seed"] for e in entries} == {0, 1}


@pytest.mark.parametrize("content, words", [
    ("[{not json", "invalid JSON"),
    (json.dumps([{"use_input_gate": True}]), "entry 0"),
    (json.dumps([{**default_grid()[0].to_dict(), "colour": "red", "id": "x"}]), "entry 0: unknown configuration key 'colour'"),
    (json.dumps([{**default_grid()[0].to_dict(), "id": "f" * 64}]), "entry 0: id"),
    (json.dumps({"a": 1}), "expected a JSON list"),
])
def test_a_broken_config_file_is_refused_and_left_untouched(tmp_path, content, words):
    f = tmp_path / "rnn_configs.json"
    f.write_text(content)
    proc = script("init_experiments.py", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "rnn_configs.json" in lines[0] and words in lines[0]
    assert f.read_text() == content
    with pytest.raises(ConfigFileError, match="rnn_configs.json"):
        read_configs(f)


def test_refine_takes_the_best_fraction_at_512_and_3_layers(tmp_path):
    import pandas as pd

    grid = default_grid(state_sizes=[32], layers=[2])[:20]
    df = pd.DataFrame([{**c.to_dict(), "min loss": float(i), "status": "done"} for i, c in enumerate(grid)])
    out = refine(df, 0.1)
    assert len(out) == 2
    assert all(c.state_size == 512 and c.n_layers == 3 for c in out)
    assert [c.switches for c in out] == [grid[0].switches, grid[1].switches]


def test_refine_from_a_results_folder_by_script(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    grid = default_grid(state_sizes=[32], layers=[1])[:10]
    for i, c in enumerate(grid):
        (res / f"{c.id}.json").write_text(json.dumps({**c.to_dict(with_id=True), "loss": [3.0, 2.0 + i],
                                                      "min loss": 2.0 + i, "status": "done"}))
    script("init_experiments.py", "--refine-from", res, "--top", "0.2", "--config-file", "stage2.json",
           cwd=tmp_path, check=True)
    entries = json.loads((tmp_path / "stage2.json").read_text())
    assert len(entries) == 2 and all(e["state_size"] == 512 and e["n_layers"] == 3 for e in entries)
    assert [e["use_old_state"] for e in entries] == [grid[0].use_old_state, grid[1].use_old_state]


def test_merge_skips_known_ids(tmp_path):
    f = tmp_path / "c.json"
    grid = default_grid(layers=[1])
    assert merge_configs(f, grid[:5]) == (5, 5)
    assert merge_configs(f, grid[3:8]) == (3, 8)


def _count_checks(monkeypatch):
    """How many entries read_configs checks one by one (RNNConfig.from_dict calls), with the
    per-process cache emptied, as in a new process."""
    import gatedrnn.spec.grid as grid

    calls = []
    real = grid.RNNConfig.from_dict
    monkeypatch.setattr(grid.RNNConfig, "from_dict", staticmethod(lambda d: calls.append(1) or real(d)))
    grid._READ.clear()
    return calls


def test_a_config_file_is_checked_entry_by_entry_once_per_content(tmp_path, monkeypatch):
    """The digest of checked bytes is kept beside the file (``<name>.checked``): a new reader of
    the same bytes does not check each entry again (status at 100,000 configurations, issue 41);
    an edit, a damaged or foreign record means the whole check, and a broken entry is still caught."""
    import gatedrnn.spec.grid as grid

    f = tmp_path / "rnn_configs.json"
    merge_configs(f, default_grid(state_sizes=[32], layers=[1]))
    side = grid.checked_path(f)
    assert json.loads(side.read_text())["sha256"] == __import__("hashlib").sha256(f.read_bytes()).hexdigest()
    calls = _count_checks(monkeypatch)
    assert len(read_configs(f)) == 48 and calls == []  # written by merge_configs: known good
    side.unlink()
    grid._READ.clear()
    assert len(read_configs(f)) == 48 and len(calls) == 48 and side.exists()  # checked whole, then remembered
    calls.clear()
    grid._READ.clear()
    assert len(read_configs(f)) == 48 and calls == []
    for damage in ("{not json", json.dumps({"format": 1, "sha256": "0" * 64, "gatedrnn": grid.__version__}),
                   json.dumps({**json.loads(side.read_text()), "gatedrnn": "0.0.0-other"})):
        good = side.read_text()
        side.write_text(damage)
        calls.clear()
        grid._READ.clear()
        assert len(read_configs(f)) == 48 and len(calls) == 48, damage
        assert side.read_text() == good  # rewritten with the digest it checked
    entries = json.loads(f.read_text())
    entries[5]["state_size"] = -3  # a hand edit; the record beside it still names the old bytes
    f.write_text(json.dumps(entries))
    grid._READ.clear()
    with pytest.raises(ConfigFileError, match="entry 5"):
        read_configs(f)
    entries[5]["state_size"] = 32
    entries[7] = dict(entries[6])  # a repeat is caught by the whole check too
    f.write_text(json.dumps(entries))
    grid._READ.clear()
    with pytest.raises(ConfigFileError, match="entry 7 repeats entry 6"):
        read_configs(f)


def test_a_config_file_in_a_folder_one_cannot_write_is_still_read(tmp_path, monkeypatch):
    import gatedrnn.spec.grid as grid

    f = tmp_path / "ro" / "rnn_configs.json"
    merge_configs(f, default_grid(state_sizes=[32], layers=[1]))
    grid.checked_path(f).unlink()
    f.parent.chmod(0o555)
    try:
        calls = _count_checks(monkeypatch)
        assert len(read_configs(f)) == 48 and len(calls) == 48
        assert not grid.checked_path(f).exists() or __import__("os").geteuid() == 0
    finally:
        f.parent.chmod(0o755)
