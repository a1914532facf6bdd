"""The command line (gatedrnn.cli.main): one parser, the subcommands, the root scripts as wrappers."""

import json
import subprocess
import sys

import pytest

from gatedrnn import TrainSettings, cli
from gatedrnn.running.options import WorkerOptions
from helpers import ROOT, env, write_configs
from test_worker import LONG, TINY_ARGS


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gatedrnn", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_subcommands(tmp_path):
    proc = run("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("init", "train", "examine", "status", "inspect", "sample", "export"):
        assert command in proc.stdout
    assert run(cwd=tmp_path).returncode == 2  # a command is required


def test_the_root_scripts_are_the_subcommands(tmp_path):
    for script, command in (("init_experiments.py", "init"), ("training_01_all.py", "train"),
                            ("examine_results_01_all.py", "examine")):
        text = (ROOT / script).read_text()
        assert f'main(["{command}", *sys.argv[1:]], prog="{script}")' in text
        code = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("#", " ", '"'))]
        assert len(code) <= 6, script  # a wrapper of a few lines
        usage = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path, env=env(),
                               capture_output=True, text=True, timeout=120)
        assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {script}")


def test_init_train_examine_through_the_gatedrnn_command(tmp_path):
    assert run("init", "--layers", "1", "--state-sizes", "8", cwd=tmp_path).returncode == 0
    configs = json.loads((tmp_path / "rnn_configs.json").read_text())
    assert len(configs) == 48
    # train two of them: a smaller configuration file
    (tmp_path / "two.json").write_text(json.dumps(configs[:2]))
    proc = run("train", *TINY_ARGS, "--steps", "40", "--config-file", "two.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "results_01_all").glob("*.json"))) == 2
    proc = run("examine", "--config-file", "two.json", "--out", "plots", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "status: done 2" in proc.stdout and (tmp_path / "plots" / "summary.md").exists()


def test_options_cross_process_boundaries_as_data():
    options = cli.train_options(["--steps", "77", "--lr", "0.003", "--data", "x.txt", "--max-runs", "2",
                                 "--lock", "soft", "--lease-seconds", "30"])
    again = WorkerOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again == options and again.settings.steps == 77 and again.settings.lr == 0.003
    assert again.lock == "soft" and again.max_runs == 2 and again.lease_seconds == 30
    assert cli.train_options(["--slurm"]).lock == "soft" and cli.train_options([]).lock == "file"
    with pytest.raises(ValueError, match="unknown worker option 'bogus'"):
        WorkerOptions.from_dict({**options.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unknown training setting"):
        WorkerOptions.from_dict({**options.to_dict(), "settings": {**TrainSettings().to_dict(), "x": 1}})


def test_a_worker_process_reads_its_options_from_standard_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gatedrnn.running.worker"], input="[1, 2]", cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: worker options on standard input")


def test_slurm_is_submitted_with_the_soft_lock_by_default(tmp_path, monkeypatch):
    import gatedrnn.running.slurm as slurm

    seen = {}
    monkeypatch.setattr(slurm, "run_array", lambda options, workers, params, wait=False:
                        seen.update(lock=options.lock, workers=workers, extra=params.extra) or 0)
    write_configs(tmp_path, [LONG])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--slurm", "--workers", "3", "--slurm-extra", "account=lab", "qos=normal",
                     *TINY_ARGS]) == 0
    assert seen == {"lock": "soft", "workers": 3, "extra": {"account": "lab", "qos": "normal"}}
    assert slurm.parse_extra(["--qos=normal", "mem-per-gpu=8G"]) == {"qos": "normal", "mem_per_gpu": "8G"}


@pytest.mark.parametrize("args, words", [
    (["--lease-seconds", "inf"], "--lease-seconds: must be a finite number"),
    (["--lr", "nan"], "--lr: must be a finite number"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--pack", "0"], "--pack must be a whole number >= 1, got 0"),
])
def test_non_finite_and_out_of_range_options_are_exit_2(tmp_path, args, words):
    write_configs(tmp_path, [LONG])
    proc = run("train", *TINY_ARGS, *args, cwd=tmp_path)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert not (tmp_path / "results_01_all" / ".queue").exists()  # nothing was started
