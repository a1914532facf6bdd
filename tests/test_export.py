"""`gatedrnn export mlflow` (gatedrnn/export.py): a results folder's runs in an MLflow store."""

import json
import subprocess
import sys

import pytest

from helpers import A, env, gatedrnn

mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install 'gatedrnn[mlflow]'")


def test_export_to_mlflow_reads_back_and_a_second_export_updates(sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    proc = gatedrnn("export", "mlflow", "--tracking-uri", uri, "--experiment", "sweep1", "--weights", cwd=sweep)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs" in proc.stdout and "2 created, 0 updated" in proc.stdout and f"mlflow ui --backend-store-uri {uri}" in proc.stdout
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sweep1")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    run = next(r for r in runs if r.data.tags["gatedrnn.id"] == A.id)
    rec = json.loads((sweep / "results_01_all" / f"{A.id}.json").read_text())
    assert run.data.params["use_forget_gate"] == "True" and run.data.params["settings.steps"] == "150"
    assert run.data.tags["gatedrnn.status"] == "done" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (50 * (i + 1), v) for i, v in enumerate(rec["loss"])]
    assert run.data.metrics["final min loss"] == rec["min loss"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {f"{A.id}.json", f"{A.id}.safetensors"}
    again = gatedrnn("export", "mlflow", "--tracking-uri", uri, "--experiment", "sweep1", cwd=sweep)
    assert again.returncode == 0 and "0 created, 2 updated" in again.stdout
    assert len(client.search_runs([exp.experiment_id])) == 2
    assert len(client.get_metric_history(run.info.run_id, "loss")) == len(rec["loss"])  # not duplicated


def test_export_defaults_to_a_local_store_beside_the_results(sweep):
    proc = gatedrnn("export", "mlflow", cwd=sweep)
    assert proc.returncode == 0, proc.stderr
    assert (sweep / "results_01_all.mlflow" / "mlflow.db").exists()
    assert "mlflow ui --backend-store-uri sqlite:///" in proc.stdout and "INFO" not in proc.stderr


def test_export_refuses_an_unwritable_uri_and_says_how_to_install_mlflow(sweep, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = gatedrnn("export", "mlflow", "--tracking-uri", f"sqlite:///{tmp_path / 'afile' / 'db'}", cwd=sweep)
    assert proc.returncode == 2 and "is not a writable folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "afile").is_dir()
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")
    e = env()
    e["PYTHONPATH"] = f"{block}:{e['PYTHONPATH']}"
    proc = subprocess.run([sys.executable, "-m", "gatedrnn", "export", "mlflow"], cwd=sweep, env=e,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pip install 'gatedrnn[mlflow]'" in proc.stderr
