"""Around a sweep (gatedrnn.cli.tools, issue 16): weights kept, status, inspect, sample; real
processes through the gatedrnn command."""

import hashlib
import json

import pandas as pd
import pytest
import torch

from helpers import A, B, C, gatedrnn, write_configs
from helpers import SWEEP_ARGS as ARGS


def weights_sha(state):
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_finished_runs_keep_their_weights_as_safetensors_with_what_they_are(sweep):
    from safetensors import safe_open

    from gatedrnn.spec.atomic import _umask

    res = sweep / "results_01_all"
    for cfg in (A, B):
        rec = json.loads((res / f"{cfg.id}.json").read_text())
        path = res / "weights" / f"{cfg.id}.safetensors"
        assert rec["weights file"] == path.name
        with safe_open(str(path), framework="pt") as f:  # the safetensors package alone: no code runs
            meta = f.metadata()
            model = {k: f.get_tensor(k) for k in f.keys()}
        assert meta["id"] == cfg.id and json.loads(meta["config"])["id"] == cfg.id
        assert json.loads(meta["settings"])["steps"] == 150 and json.loads(meta["step"]) == 150
        assert weights_sha(model) == rec["final weights sha256"]
        assert rec["convergence step"] in range(50, 151, 50)
        assert rec["inference ms per step (batch 1)"] > 0 and rec["inference ms per step (training batch)"] > 0
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_weights_written_as_pt_before_are_still_read(sweep, tmp_path):
    """A folder from before safetensors: its .pt weights are inspected and sampled as before."""
    import shutil

    from gatedrnn.training import checkpoints

    old = tmp_path / "old"
    shutil.copytree(sweep, old)
    res = old / "results_01_all"
    new = res / "weights" / f"{A.id}.safetensors"
    record = checkpoints.read_weights(new)
    record.pop("id")
    checkpoints.save(res / "weights" / f"{A.id}.pt", record)  # the old format: a dict for torch.load
    new.unlink()
    w = json.loads(gatedrnn("inspect", A.id[:12], "--json", cwd=old).stdout)
    assert w["kind"] == "weights" and w["file"].endswith(".pt") and w["id"] == A.id
    a = gatedrnn("sample", A.id[:10], "--bytes", "30", "--seed", "1", cwd=old)
    b = gatedrnn("sample", A.id[:10], "--bytes", "30", "--seed", "1", cwd=sweep)
    assert a.returncode == 0 and a.stdout == b.stdout


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
    w = json.loads(gatedrnn("inspect", res / "weights" / f"{B.id}.safetensors", "--json", cwd=sweep).stdout)
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

