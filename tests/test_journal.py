"""The results folder's journal (gatedrnn/store/journal.py; issue 41): a claim's system calls do
not grow with the sweep (counted by strace at two sizes an order of magnitude apart, never
timed), and the journal stays derived from the folder: rebuilt when missing, damaged, written
past, or older than the folder, so that a result deleted by hand is trained again and a damaged
one is set aside at the next worker start; a folder of a newer format is refused in one line."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gatedrnn.spec.grid import numbered_configs
from gatedrnn.store.folder import ResultsFolder
from gatedrnn.store.journal import FORMAT, FormatError, Journal
from gatedrnn.store.queue import Queue
from helpers import ROOT, gatedrnn

FS_CALLS = ("stat", "lstat", "fstat", "newfstatat", "statx", "openat", "read", "getdents64")


configs_of = numbered_configs


def folder_with(tmp_path, n, pending=12):
    """n configurations, all but ``pending`` finished (results written plainly, as by hand)."""
    root = tmp_path / f"n{n}"
    root.mkdir()
    configs = configs_of(n)
    for c in configs[: n - pending]:
        (root / f"{c['id']}.json").write_text(json.dumps({**c, "status": "done", "loss": [2.0]}))
    (tmp_path / f"configs{n}.json").write_text(json.dumps(configs))
    return root, configs


def fs_calls(root, configs_file, claims, completes=0):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from gatedrnn.store.queue import Queue
        configs = json.load(open({str(configs_file)!r}))
        q = Queue({str(root)!r})
        q.release(q.claim(configs, "warm"))
        cs = [q.claim(configs, "w") for _ in range({claims})]
        for c in cs[:{completes}]:
            q.complete(c, {{"id": c.id, "status": "done", "loss": [2.0]}})
    """)
    out = Path(str(root) + ".strace")
    subprocess.run(["strace", "-f", "-c", "-o", str(out), "-e", "trace=" + ",".join(FS_CALLS), sys.executable, "-c",
                    script], check=True, capture_output=True)
    total = 0
    for line in out.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in FS_CALLS and len(parts) >= 5:
            total += int(parts[3])
    return total


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")
def test_a_claim_and_a_completion_cost_the_same_system_calls_at_300_and_at_3000_configurations(tmp_path):
    per = {}
    for n in (300, 3000):
        root, _ = folder_with(tmp_path, n)
        cfile = tmp_path / f"configs{n}.json"
        Queue(root).claim([], "make the journal")  # current before counting
        base = tmp_path / f"base{n}"
        shutil.copytree(root, base)
        counts = []
        for claims, completes in ((0, 0), (5, 0), (5, 5)):
            shutil.rmtree(root)
            shutil.copytree(base, root)
            counts.append(fs_calls(root, cfile, claims, completes))
        per[n] = ((counts[1] - counts[0]) / 5, (counts[2] - counts[1]) / 5)
    (claim300, complete300), (claim3000, complete3000) = per[300], per[3000]
    assert claim3000 <= 2 * claim300 and complete3000 <= 2 * complete300, per
    assert claim3000 < 150 and complete3000 < 150, per  # a few dozen, not thousands


def test_the_journal_is_rebuilt_from_the_folder_when_it_is_missing_damaged_or_older(tmp_path):
    root, configs = folder_with(tmp_path, 40, pending=4)
    q = Queue(root)
    claim = q.claim(configs, "w")
    q.complete(claim, {"id": claim.id, "status": "done", "loss": [2.0]})
    folder = ResultsFolder(root)
    head = json.loads((folder.journal_dir / "head.json").read_text())
    assert head["format"] == FORMAT and head["seq"] >= 37
    fresh = Journal(ResultsFolder(root)).look()
    assert not fresh.rebuilt and len(fresh.status) == 37 and fresh.status[claim.id] == "done"
    # a result deleted by hand: the folder changed behind the journal; the next look rebuilds it
    # and the configuration is claimed (trained) again
    victim = configs[0]["id"]
    folder.result(victim).unlink()
    again = Queue(root).claim(configs, "w2")
    assert again.id == victim
    assert Journal(ResultsFolder(root)).look().status.get(victim) is None
    # a damaged head, and a segment written past the head (a writer killed between the two)
    (folder.journal_dir / "head.json").write_text("{not json")
    assert Journal(ResultsFolder(root)).look().rebuilt
    Queue(root).claim([], "w3")  # a lock hold writes it anew
    head = json.loads((folder.journal_dir / "head.json").read_text())
    seg = folder.journal_dir / f"{head['generation']}-{head['segment']}.json"
    events = json.loads(seg.read_text())["events"]
    seg.write_text(json.dumps({"events": events + [[head["seq"] + 1, "r", configs[1]["id"], "failed"]]}))
    view = Journal(ResultsFolder(root)).look()
    assert not view.rebuilt and view.status[configs[1]["id"]] == "done"  # past the head: not read


def test_a_damaged_result_is_set_aside_at_the_next_worker_start(tmp_path):
    root, configs = folder_with(tmp_path, 30, pending=2)
    Queue(root).claim([], "w")
    victim = configs[3]["id"]
    path = ResultsFolder(root).result(victim)
    stat = path.stat()
    path.write_text('{"id": "' + victim + '", "status": "do')  # damaged in place: the folder's mtime unchanged
    import os

    os.utime(root, ns=(stat.st_atime_ns, ResultsFolder(root).root.stat().st_mtime_ns))
    claims = [Queue(root, report=lambda line: None).claim(configs, f"w{i}") for i in range(3)]
    assert victim in {c.id for c in claims if c is not None}
    assert (root / f"{victim}.json.corrupt").exists()


def test_a_folder_of_a_newer_format_is_refused_in_one_line(tmp_path):
    root, configs = folder_with(tmp_path, 10, pending=2)
    Queue(root).claim([], "w")
    folder = ResultsFolder(root)
    head = json.loads((folder.journal_dir / "head.json").read_text())
    (folder.journal_dir / "head.json").write_text(json.dumps({**head, "format": FORMAT + 1}))
    with pytest.raises(FormatError, match="written by a newer gatedrnn"):
        Journal(folder).look()
    (tmp_path / "rnn_configs.json").write_text(json.dumps(configs))
    shutil.move(str(root), str(tmp_path / "results_01_all"))
    proc = gatedrnn("status", "--config-file", "rnn_configs.json", cwd=tmp_path)
    assert proc.returncode == 2 and "written by a newer gatedrnn" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_status_trusts_a_current_journal_and_says_when_it_rebuilt_it(tmp_path):
    root, configs = folder_with(tmp_path, 50, pending=5)
    (tmp_path / "rnn_configs.json").write_text(json.dumps(configs))
    shutil.move(str(root), str(tmp_path / "results_01_all"))
    out = gatedrnn("status", "--config-file", "rnn_configs.json", cwd=tmp_path)
    assert "done 45" in out.stdout and "journal rebuilt" in out.stdout  # none yet: read from the folder
    Queue(tmp_path / "results_01_all").claim([], "w")
    out = gatedrnn("status", "--config-file", "rnn_configs.json", cwd=tmp_path)
    assert "done 45" in out.stdout and "journal rebuilt" not in out.stdout
