"""What a worker is told (gatedrnn/options.py): plain data that crosses processes as JSON."""

import json
from pathlib import Path

import pytest

from gatedrnn import TrainSettings
from gatedrnn.running.options import BAD_INPUT, WorkerOptions, recorded_settings


def test_options_cross_a_process_boundary_as_json_and_come_back_equal():
    opts = WorkerOptions(config_file="c.json", results_dir="r", settings=TrainSettings.tiny(device="cpu"),
                         pack=4, workers=3, max_runs=2)
    back = WorkerOptions.from_dict(json.loads(json.dumps(opts.to_dict())))
    assert back == opts and "stop" not in opts.to_dict()


def test_unknown_or_malformed_options_are_refused():
    d = WorkerOptions(config_file="c", results_dir="r", settings=TrainSettings.tiny()).to_dict()
    with pytest.raises(ValueError, match="unknown worker option 'colour'"):
        WorkerOptions.from_dict({**d, "colour": "red"})
    with pytest.raises(TypeError, match="must be a JSON object"):
        WorkerOptions.from_dict([1, 2])
    assert ValueError in BAD_INPUT and TypeError in BAD_INPUT


def test_resolved_paths_are_absolute_so_a_worker_elsewhere_finds_the_same_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opts = WorkerOptions(config_file="c.json", results_dir="r", settings=TrainSettings.tiny(data="corpus.txt"))
    r = opts.resolved(name="w0")
    assert Path(r.config_file) == tmp_path / "c.json" and Path(r.results_dir) == tmp_path / "r"
    assert Path(r.settings.data) == tmp_path / "corpus.txt" and r.name == "w0"


def test_the_recorded_settings_carry_the_corpus_hash():
    rec = recorded_settings(TrainSettings.tiny(), "ab" * 32)
    assert rec["dataset sha256"] == "ab" * 32 and rec["steps"] == TrainSettings.tiny().steps
