import re

from helpers import ROOT


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, re.S)


def test_readme_opens_with_the_sweep_and_the_test_command_and_ci_runs_the_latter():
    sweep, tests = readme_commands()[:2]
    for script in ("init_experiments.py", "training_01_all.py", "examine_results_01_all.py"):
        assert script in sweep
    assert "pytest" in tests
    ci_lines = [ln for ln in (ROOT / ".ci/run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert tests in ci_lines


def test_committed_grid_is_the_default_grid():
    from gatedrnn.spec.grid import default_grid, read_configs

    entries = read_configs(ROOT / "rnn_configs.json")
    assert [e["id"] for e in entries] == [c.id for c in default_grid()]
