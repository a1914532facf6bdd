"""`gatedrnn export mlflow` (gatedrnn/export.py): a results folder's runs in an MLflow store."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, A, env, gatedrnn, wait_for, write_configs

mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install 'gatedrnn[mlflow]'")


def test_export_to_mlflow_reads_back_and_a_second_export_updates(sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    proc = gatedrnn("export", "mlflow", "--tracking-uri", uri, "--experiment", "sweep1", "--weights", cwd=sweep)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs" in proc.stdout and "2 created, 0 updated, 0 up to date" in proc.stdout and f"mlflow ui --backend-store-uri {uri}" in proc.stdout
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
    assert again.returncode == 0 and "0 created, 0 updated, 2 up to date" in again.stdout
    assert not (sweep / "mlruns").exists()  # artifacts beside the store, never in the current folder
    assert (tmp_path / "store" / "artifacts").is_dir()
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


def test_a_follower_exports_a_result_written_while_it_takes_its_last_snapshot(sweep, tmp_path, monkeypatch):
    """A result written between a pass's look at the finished results and its snapshot: the
    snapshot finds nothing left, and the follower still ends that run FINISHED before it stops."""
    import shutil

    from mlflow.tracking import MlflowClient

    import gatedrnn.cli.export as export
    from gatedrnn.spec.grid import merge_configs

    work = tmp_path / "sweep"
    shutil.copytree(sweep / "results_01_all", work / "results_01_all")
    merge_configs(work / "listed.json", [A])  # A alone: finished once its result is there
    result = work / "results_01_all" / f"{A.id}.json"
    aside = tmp_path / "aside.json"
    result.rename(aside)
    real = export.sweep_status

    def finishing_meanwhile(*args, **kwargs):
        if aside.exists():
            aside.rename(result)  # A's worker completes now
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "sweep_status", finishing_meanwhile)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = export.export_mlflow(work / "results_01_all", uri, "race", follow=True, every=0.01,
                               config_file=work / "listed.json")
    client = MlflowClient(tracking_uri=uri)
    runs = {r.data.tags["gatedrnn.id"]: r for r in client.search_runs([out["experiment id"]])}
    assert runs[A.id].info.status == "FINISHED" and runs[A.id].data.tags["gatedrnn.status"] == "done"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on a free loopback port, for this test only."""
    import shutil
    import signal
    import urllib.request
    from pathlib import Path

    pytest.importorskip("mlflow.server", reason="the MLflow server is in the full package: pip install 'gatedrnn[dev]'")
    exe = Path(sys.executable).parent / "mlflow"
    exe = str(exe) if exe.exists() else shutil.which("mlflow")
    if exe is None:
        pytest.skip("no mlflow command: pip install 'gatedrnn[dev]'")
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts")],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(f"{uri}/health", timeout=2).read() == b"OK"
        except OSError:
            return False

    try:
        wait_for(up, timeout=120, interval=0.5, what="the MLflow server")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def _follower(cwd, uri):
    return subprocess.Popen([sys.executable, "-m", "gatedrnn", "export", "mlflow", "--follow", "--every", "0.5",
                             "--tracking-uri", uri, "--experiment", "live"], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_follow_keeps_a_live_server_in_step_with_a_training_sweep(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    from gatedrnn import RNNConfig
    from gatedrnn.store.folder import ResultsFolder, failed_record, result_record

    configs = [RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=s) for s in (12, 14)]
    write_configs(tmp_path, configs)
    folder = ResultsFolder(tmp_path / "results_01_all")
    folder.weights_dir.mkdir(exist_ok=True)
    # a failed and a diverged result as the queue writes them (of configurations not in this sweep)
    bad, wild = (RNNConfig(True, True, True, True, True, True, True, n_layers=1, state_size=s).to_dict(with_id=True)
                 for s in (20, 22))
    folder.write_result(failed_record(bad, [{"time": 1.0, "error": "Traceback\nValueError: boom"}]))
    folder.write_result(result_record(wild, "diverged", {"loss": [3.1, 2.9], "min loss": 2.9, "log every": 50,
                                                         "diverged at step": 150, "end time": 2.0}))
    sweep = subprocess.Popen([sys.executable, str(ROOT / "training_01_all.py"), "--pack", "1", "--steps", "8000",
                              "--batch-size", "8", "--history", "50", "--log-every", "50", "--eval-every", "1000",
                              "--device", "cpu", "--threads", "1", "--lease-seconds", "4"], cwd=tmp_path, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    follower = _follower(tmp_path, mlflow_server)
    client = MlflowClient(tracking_uri=mlflow_server)

    def running_with_a_curve():
        exp = client.get_experiment_by_name("live")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return any(r.info.status == "RUNNING" and len(client.get_metric_history(r.info.run_id, "loss")) >= 2
                   for r in runs)

    try:
        wait_for(running_with_a_curve, timeout=240, interval=0.5, what="a RUNNING run with its curve so far")
        follower.kill()  # killed mid-sweep, the next follower goes on where it stopped
        follower.wait(timeout=60)
        follower = _follower(tmp_path, mlflow_server)
        out, _ = follower.communicate(timeout=300)
        assert follower.returncode == 0, out
        assert sweep.wait(timeout=300) == 0
    finally:
        for proc in (sweep, follower):
            if proc.poll() is None:
                proc.kill()
    exp = client.get_experiment_by_name("live")
    runs = {r.data.tags["gatedrnn.id"]: r for r in client.search_runs([exp.experiment_id])}
    assert len(runs) == 4  # never a run twice
    for config in configs:
        run, rec = runs[config.id], json.loads(folder.result(config.id).read_text())
        assert run.info.status == "FINISHED" and run.data.tags["gatedrnn.status"] == "done"
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
        assert history == [(50 * (i + 1), v) for i, v in enumerate(rec["loss"])]  # every point once
        assert run.data.metrics["final val loss"] == rec["val loss"]
    assert runs[bad["id"]].info.status == "FAILED" and runs[bad["id"]].data.tags["gatedrnn.reason"] == "ValueError: boom"
    assert runs[wild["id"]].info.status == "FAILED"
    assert runs[wild["id"]].data.tags["gatedrnn.reason"] == "diverged at step 150"
