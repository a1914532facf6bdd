"""Around a sweep (gatedrnn.tools, issue 16): weights kept, status, inspect, sample; real
processes through the gatedrnn command."""

import hashlib
import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.queue import HOST
from gatedrnn.trainer import Interrupted, train
from helpers import env, write_configs

A = RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=16)
B = RNNConfig(True, False, True, False, True, True, True, n_layers=2, state_size=16)
C = RNNConfig(False, False, False, False, True, False, True, n_layers=1, state_size=12)
ARGS = ["--steps", "150", "--batch-size", "8", "--history", "50", "--device", "cpu", "--threads", "1",
        "--checkpoint-every", "50", "--val-streams", "8", "--eval-every", "0"]


def gatedrnn(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gatedrnn", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished sweep of A and B, C pending with a checkpoint and a stale claim."""
    d = tmp_path_factory.mktemp("sweep")
    write_configs(d, [A, B])
    proc = gatedrnn("train", *ARGS, cwd=d)
    assert proc.returncode == 0, proc.stderr
    write_configs(d, [C])  # appended: pending
    res = d / "results_01_all"
    settings = TrainSettings(steps=150, batch_size=8, history=50, device="cpu", checkpoint_every=50, val_streams=8,
                             eval_every=0)
    with pytest.raises(Interrupted):
        train(C, settings, checkpoint=res / "checkpoints" / f"{C.id}.pt", should_stop=iter([False] * 60 + [True] * 999).__next__)
    (res / ".queue/claims" / f"{C.id}.json").write_text(json.dumps(
        {"id": C.id, "worker": "gone", "host": HOST, "pid": 999999, "token": "t", "claimed": 1.0,
         "heartbeat": time.time() - 5, "lease": 120.0, "attempt": 1, "progress": {"step": 60}}))
    return d


def weights_sha(state):
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_finished_runs_keep_their_weights_safely_loadable(sweep):
    res = sweep / "results_01_all"
    for cfg in (A, B):
        rec = json.loads((res / f"{cfg.id}.json").read_text())
        w = torch.load(res / "weights" / f"{cfg.id}.pt", weights_only=True)  # no pickled code
        assert w["config"]["id"] == cfg.id and rec["weights file"] == f"{cfg.id}.pt"
        assert weights_sha(w["model"]) == rec["final weights sha256"]
        assert rec["convergence step"] in range(50, 151, 50)
        assert rec["inference ms per step (batch 1)"] > 0 and rec["inference ms per step (training batch)"] > 0
        from gatedrnn._atomic import _umask

        assert (res / "weights" / f"{cfg.id}.pt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_no_weights_skips_them(tmp_path):
    write_configs(tmp_path, [C])
    assert gatedrnn("train", *ARGS, "--no-weights", cwd=tmp_path).returncode == 0
    assert not list((tmp_path / "results_01_all/weights").glob("*"))


def test_status_counts_claims_failures_and_exit_status(sweep):
    proc = gatedrnn("status", cwd=sweep)
    assert proc.returncode == 3, proc.stderr  # C is left
    assert "done 2 · diverged 0 · failed 0 · running 0 · pending 1 (of 3)" in proc.stdout
    assert "stale claims" in proc.stdout and "gone on" in proc.stdout and "step 60" in proc.stdout
    report = json.loads(gatedrnn("status", "--json", cwd=sweep).stdout)
    assert report["counts"]["done"] == 2 and report["stale"][0]["id"] == C.id and report["work left"]
    assert report["config file"].endswith("rnn_configs.json")  # the one the launcher recorded
    one = sweep / "ab.json"
    one.write_text(json.dumps([A.to_dict(with_id=True)]))
    done = gatedrnn("status", "--config-file", one, cwd=sweep)
    assert done.returncode == 0 and "done 1" in done.stdout


def test_inspect_a_checkpoint_a_weights_file_and_a_run(sweep):
    res = sweep / "results_01_all"
    proc = gatedrnn("inspect", C.id[:10], "--json", cwd=sweep)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["kind"] == "checkpoint" and r["step"] == 60 and r["id"] == C.id
    assert r["optimizer"]["kind"] == "Adam" and r["optimizer"]["step count"] == 60
    assert r["optimizer"]["moment values"] == 2 * r["parameters"]["total"]["trainable"]
    assert r["curve"]["points"] == 1 and r["dataset"].startswith("builtin")
    w = json.loads(gatedrnn("inspect", res / "weights" / f"{B.id}.pt", "--json", cwd=sweep).stdout)
    assert w["kind"] == "weights" and w["parameters"]["total"]["trainable"] == json.loads(
        (res / f"{B.id}.json").read_text())["parameters"]
    assert {"layer 0", "layer 1", "embedding", "readout"} <= set(w["parameters"]["by layer"])
    text = gatedrnn("inspect", B.id[:12], cwd=sweep).stdout
    assert "total parameters" in text and "layers.1." in text


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "nope.pt", "not a readable gatedrnn checkpoint"),
    (lambda d: (d / "foreign.pt", torch.save({"x": torch.zeros(2)}, d / "foreign.pt"))[0], "format None"),
    (lambda d: (d / "empty.pt", (d / "empty.pt").write_bytes(b""))[0], "not a readable"),
])
def test_a_foreign_or_unreadable_file_is_one_line_and_exit_2(sweep, tmp_path, make, words):
    path = make(tmp_path)
    if not path.exists():
        path.write_bytes(b"garbage")
    proc = gatedrnn("inspect", path, cwd=sweep)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr


def test_ids_bad_prefixes_and_missing_folders_are_one_line_and_exit_2(sweep, tmp_path):
    for args, words in [(["inspect", "ffffffffffffff"], "no run with an id starting"),
                        (["inspect", "xyz"], "is not a configuration id"),
                        (["sample", "abc", "--results-dir", tmp_path / "none"], "no such results folder"),
                        (["status", "--results-dir", tmp_path / "none"], "no such results folder"),
                        (["sample", C.id[:8]], "no weights for run")]:
        proc = gatedrnn(*args, cwd=sweep)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, args
    ids = sorted([A.id, B.id, C.id])
    common = next((p for p in (ids[0][:1],) if sum(i.startswith(p) for i in ids) > 1), None)
    if common:  # an ambiguous prefix lists the matches
        proc = gatedrnn("inspect", common, cwd=sweep)
        assert proc.returncode == 2 and "runs have ids starting" in proc.stderr


def test_sample_is_reproducible_and_prompt_warmed(sweep):
    a = gatedrnn("sample", A.id[:10], "--prompt", "The ", "--bytes", "60", "--seed", "3", cwd=sweep)
    b = gatedrnn("sample", A.id[:10], "--prompt", "The ", "--bytes", "60", "--seed", "3", cwd=sweep)
    c = gatedrnn("sample", A.id[:10], "--prompt", "The ", "--bytes", "60", "--seed", "4", cwd=sweep)
    assert a.returncode == 0 and a.stdout == b.stdout != c.stdout
    assert a.stdout.startswith("The ")
    greedy = gatedrnn("sample", A.id[:10], "--prompt", "import ", "--bytes", "20", "--top-k", "1", cwd=sweep)
    greedy2 = gatedrnn("sample", A.id[:10], "--prompt", "import ", "--bytes", "20", "--top-k", "1", "--seed", "9",
                       cwd=sweep)
    assert greedy.stdout == greedy2.stdout  # top-1 does not depend on the seed
    bad = gatedrnn("sample", A.id[:10], "--temperature", "0", cwd=sweep)
    assert bad.returncode == 2 and "--temperature" in bad.stderr


def test_the_analysis_summarises_the_two_new_metrics(sweep):
    proc = gatedrnn("examine", "--out", "plots", cwd=sweep)
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(sweep / "plots/summary.csv")
    for col in ("convergence step mean", "inference ms per step (batch 1) mean",
                "inference ms per step (training batch) mean"):
        assert col in summary and summary[col].notna().sum() == 2, col


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
    assert names == {f"{A.id}.json", f"{A.id}.pt"}
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
