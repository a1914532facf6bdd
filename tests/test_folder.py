"""The results folder's one owner (gatedrnn.store.folder): paths, listing, the result record."""

import json
import os

import pytest

from gatedrnn import RNNConfig
from gatedrnn.store.folder import FolderError, ResultsFolder, failed_record, finished_record, result_record

CONFIG = RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=8).to_dict(with_id=True)


def test_paths_follow_the_design(tmp_path):
    f = ResultsFolder(tmp_path)
    cid = CONFIG["id"]
    assert f.result(cid) == tmp_path / f"{cid}.json"
    assert f.checkpoint(cid) == tmp_path / "checkpoints" / f"{cid}.pt"
    assert f.weights(cid).parent == tmp_path / "weights"
    assert f.claim(cid) == tmp_path / ".queue" / "claims" / f"{cid}.json"
    assert f.attempt(cid) == tmp_path / ".queue" / "attempts" / f"{cid}.json"
    assert f.lock == tmp_path / ".queue" / "lock" and f.logs == tmp_path / ".queue" / "logs"
    assert not (tmp_path / ".queue").exists()  # naming touches nothing


def test_listing_sees_results_not_caches_or_temp_files(tmp_path):
    f = ResultsFolder(tmp_path)
    cid = CONFIG["id"]
    f.result(cid).write_text("{}")
    (tmp_path / f".{cid}.json.abc.tmp").write_text("{")
    f.queue.mkdir()
    f.ngram_cache("ab").write_text("{}")
    (tmp_path / ".ngram-ab.json").write_text("{}")  # where caches were before the journal
    (tmp_path / "original-study-run.json").write_text("{}")
    assert f.finished_ids() == {cid}
    assert [p.name for p in f.result_files()] == [f"{cid}.json", "original-study-run.json"]
    assert ResultsFolder(tmp_path / "missing").finished_ids() == set()


def test_prepare_refuses_a_missing_file_or_read_only_folder(tmp_path):
    with pytest.raises(FolderError, match="no such results folder"):
        ResultsFolder(tmp_path / "missing").prepare()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match="not a directory"):
        ResultsFolder(tmp_path / "file").prepare()
    ResultsFolder(tmp_path).prepare()
    assert (tmp_path / ".queue" / "claims").is_dir() and (tmp_path / "checkpoints").is_dir()
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(FolderError, match="not writable"):
            ResultsFolder(ro).prepare()


def test_the_record_puts_the_configuration_and_the_original_keys_first():
    rec = result_record(CONFIG, "done", {"val loss": 1.5, "loss": [2.0, 1.9], "min loss": 1.9, "start time": 1.0})
    keys = list(rec)
    assert keys[: len(CONFIG)] == list(CONFIG)
    assert keys.index("start time") < keys.index("loss") < keys.index("status") < keys.index("val loss")
    with pytest.raises(ValueError, match="status"):
        result_record(CONFIG, "finished", {})
    with pytest.raises(ValueError, match="id"):
        result_record({k: v for k, v in CONFIG.items() if k != "id"}, "done", {})


def test_failed_and_finished_records():
    errors = [{"error": "Traceback ...\nValueError: first"}, {"error": "Traceback ...\nKeyError: 'x'"}]
    rec = failed_record(CONFIG, errors)
    assert rec["status"] == "failed" and rec["error"] == "KeyError: 'x'" and rec["attempts"] == 2
    assert rec["loss"] == [] and rec["min loss"] is None and rec["id"] == CONFIG["id"]
    json.dumps(rec)
    done = finished_record({"id": CONFIG["id"], "status": "done"}, attempts=2, worker="w1")
    assert done == {"id": CONFIG["id"], "status": "done", "attempts": 2, "worker": "w1"}


def test_a_finished_run_leaves_no_temp_file_of_a_write_that_a_kill_cut_short(tmp_path):
    """A worker SIGKILLed while writing a checkpoint cannot remove its temp file (CI saw one left
    in checkpoints/ after a packed worker was killed mid-save); dropping the finished run or pack
    removes it, and nothing of another configuration."""
    import signal
    import subprocess
    import sys

    f = ResultsFolder(tmp_path)
    cid, other = CONFIG["id"], "f" * 64
    f.checkpoints.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from gatedrnn.spec.atomic import atomic_write\n"
        "def write(fh):\n"
        "    fh.write(b'x' * 1000); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
        "atomic_write(sys.argv[1], write)\n"), str(f.checkpoint(cid))], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    assert writer.wait(timeout=30) == -signal.SIGKILL
    f.checkpoint(cid).write_bytes(b"an earlier checkpoint")
    left = [p.name for p in f.checkpoints.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(f".{cid}.pt.")  # what the kill left
    theirs = f.checkpoints / f".{other}.pt.abcd1234.tmp"  # another run's write, maybe in progress
    theirs.write_bytes(b"y")
    pack = f.pack_checkpoint("p" * 64)
    (pack.parent / f".{pack.name}.zz9.tmp").write_bytes(b"z")
    f.drop_run(cid)
    assert sorted(p.name for p in f.checkpoints.iterdir()) == sorted([theirs.name, f".{pack.name}.zz9.tmp"])
    f.drop_pack("p" * 64)
    assert [p.name for p in f.checkpoints.iterdir()] == [theirs.name]
