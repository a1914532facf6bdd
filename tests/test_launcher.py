"""The launcher (gatedrnn/launcher.py): options checked before anything is claimed, workers
started and supervised, Ctrl-C forwarded, the exit status of the sweep."""

import json
import signal
import subprocess
import sys

import pytest

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.running.launcher import exit_status, validate, watch
from gatedrnn.running.options import WorkerOptions
from helpers import ROOT, claims, env, results, script, wait_for, write_configs

LONG = RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=16)
LONG_ARGS = ["--steps", "2500", "--batch-size", "8", "--history", "50", "--device", "cpu",
             "--checkpoint-every", "100", "--log-every", "50", "--eval-every", "1000",
             "--val-streams", "8", "--threads", "1"]


def options(tmp_path, **changes):
    write_configs(tmp_path, [LONG])
    return WorkerOptions(config_file=str(tmp_path / "rnn_configs.json"), results_dir=str(tmp_path / "results_01_all"),
                         settings=TrainSettings.tiny(device="cpu"), **changes)


@pytest.mark.parametrize("changes, words", [({"max_runs": 0}, "--max-runs must be >= 1"),
                                            ({"pack": 0}, "--pack must be a whole number >= 1"),
                                            ({"threads": 0}, "--threads must be >= 1"),
                                            ({"fault_retries": -1}, "must be >= 0")])
def test_bad_options_are_refused_before_anything_is_recorded(tmp_path, changes, words):
    opts = options(tmp_path, **changes)
    with pytest.raises(ValueError, match=words):
        validate(opts)
    assert not (tmp_path / "results_01_all/.queue/settings.json").exists()


def test_validate_records_the_settings_and_the_configuration_file(tmp_path):
    opts = options(tmp_path)
    validate(opts)
    folder = tmp_path / "results_01_all/.queue"
    assert json.loads((folder / "settings.json").read_text())["steps"] == opts.settings.steps
    assert json.loads((folder / "configs.json").read_text())["config file"] == str(tmp_path / "rnn_configs.json")


def test_the_exit_status_says_work_left_then_failures():
    counts = {"done": 3, "diverged": 1, "failed": 0, "running": 0, "pending": 0}
    assert exit_status({"counts": counts}) == 0
    assert exit_status({"counts": {**counts, "failed": 1}}) == 1
    assert exit_status({"counts": {**counts, "failed": 1, "pending": 1}}) == 3


def test_watch_prints_the_status_until_the_workers_are_gone(tmp_path, capsys):
    opts = options(tmp_path)
    validate(opts)
    calls = []
    status = watch(opts, lambda: calls.append(1) or len(calls) < 2, refresh=0.01)
    assert status["counts"]["pending"] == 1
    assert "pending 1 (of 1)" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_on_the_launcher_stops_every_worker_and_a_rerun_finishes(tmp_path):
    configs = [LONG, RNNConfig(**{**LONG.to_dict(), "state_size": 12})]
    write_configs(tmp_path, configs)
    launcher = subprocess.Popen([sys.executable, str(ROOT / "training_01_all.py"), "--workers", "2", *LONG_ARGS],
                                cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(claims(tmp_path)) == 2 and all((c.get("progress") or {}).get("step", 0) > 0
                                                        for c in claims(tmp_path)), what="two running workers")
    launcher.send_signal(signal.SIGINT)
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 3, out
    assert "rerun the same command to resume" in out
    assert claims(tmp_path) == [] and results(tmp_path) == {}
    assert len(list((tmp_path / "results_01_all/checkpoints").glob("*.pt"))) == 2
    rerun = script("training_01_all.py", "--workers", "2", *LONG_ARGS, cwd=tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert {r["resumes"] for r in results(tmp_path).values()} == {1}




@pytest.mark.slow
def test_a_rerun_given_only_the_folders_continues_with_the_recorded_settings(tmp_path):
    args = ["--steps", "1500", "--batch-size", "8", "--history", "50", "--device", "cpu", "--checkpoint-every", "100",
            "--log-every", "50", "--eval-every", "500", "--val-streams", "8"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for d in (straight, stopped):
        d.mkdir()
        write_configs(d, [LONG])
    assert script("training_01_all.py", *args, cwd=straight).returncode == 0
    launcher = subprocess.Popen([sys.executable, str(ROOT / "training_01_all.py"), *args], cwd=stopped, env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: any((c.get("progress") or {}).get("step", 0) >= 200 for c in claims(stopped)),
             what="a run past its first checkpoints")
    launcher.send_signal(signal.SIGINT)
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 3 and results(stopped) == {}, out
    rerun = script("training_01_all.py", "--config-file", "rnn_configs.json", "--results-dir", "results_01_all",
                   cwd=stopped)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert ("results_01_all: continuing with its recorded settings: steps=1500, batch_size=8, history=50, lr=0.001, "
            "log_every=50, eval_every=500, seed=0, val_streams=8") in rerun.stdout
    a, b = results(straight)[LONG.id], results(stopped)[LONG.id]
    shaping = ("steps", "batch_size", "history", "lr", "log_every", "eval_every", "seed", "val_streams", "data")
    assert b["resumes"] == 1 and all(b["settings"][k] == a["settings"][k] for k in shaping)
    assert b["final weights sha256"] == a["final weights sha256"] and b["loss"] == a["loss"]
    other = script("training_01_all.py", "--steps", "999", cwd=stopped)  # an explicit other value: refused
    assert other.returncode == 2 and "steps=1500" in other.stderr and "steps=999" in other.stderr


def test_a_folder_recorded_before_the_split_rule_keeps_validating_on_its_whole_held_out_part(tmp_path):
    """Issues 23 and 30: a results folder's runs all use one split rule and one input map. A new
    folder records ``windows`` and ``linear`` and its runs carry test metrics; a folder recorded
    between issues 23 and 30 continues with ``blocks`` and ``normal``, one recorded before the
    split rule with ``tail`` (no test split) and ``normal``, each said in one line, and each
    refuses nothing else."""
    args = ["--steps", "120", "--batch-size", "4", "--history", "20", "--device", "cpu", "--val-streams", "4",
            "--log-every", "20", "--eval-every", "0"]
    new, between, old = tmp_path / "new", tmp_path / "between", tmp_path / "old"
    for d in (new, between, old):
        d.mkdir()
        write_configs(d, [LONG])
    assert script("training_01_all.py", *args, cwd=new).returncode == 0
    recorded = json.loads((new / "results_01_all/.queue/settings.json").read_text())
    assert recorded["split"] == "windows" and recorded["input_init"] == "linear"
    fresh = results(new)[LONG.id]
    assert fresh["settings"]["split"] == "windows" and fresh["test loss"] != fresh["val loss"] > 0
    kept = {}
    for d, legacy in ((between, {**recorded, "split": "blocks"}), (old, recorded)):
        (d / "results_01_all/.queue").mkdir(parents=True)
        legacy = {k: v for k, v in legacy.items() if k not in ("input_init",) + (("split",) if d is old else ())}
        (d / "results_01_all/.queue/settings.json").write_text(json.dumps(legacy))
        rerun = script("training_01_all.py", "--config-file", "rnn_configs.json", cwd=d)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "input_init=normal" in rerun.stdout
        kept[d.name] = results(d)[LONG.id]
        assert kept[d.name]["settings"]["input_init"] == "normal"
    assert "split=tail" in rerun.stdout and kept["between"]["settings"]["split"] == "blocks"
    assert kept["between"]["test loss"] > 0
    assert kept["old"]["settings"]["split"] == "tail" and "test loss" not in kept["old"]
    assert kept["old"]["loss"] == kept["between"]["loss"]  # the training bytes are the same under every rule
    assert kept["old"]["loss"] != fresh["loss"]  # the input map is not
