"""The results folder's journal (gatedrnn/store/journal.py; issue 41): a claim's system calls do
not grow with the sweep (counted by strace at two sizes an order of magnitude apart, never
timed), and the journal stays derived from the folder: rebuilt when missing, damaged, written
past, or older than the folder, so that a result deleted by hand is trained again and a damaged
one is set aside at the next worker start; a folder of a newer format is refused in one line."""

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gatedrnn.spec.grid import numbered_configs
from gatedrnn.store.folder import ResultsFolder, pack_id_of
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


def fs_calls(root, configs_file, claims, completes=0, halving=False):
    """System calls of a process that claims ``claims`` configurations and completes the first
    ``completes`` (after a warm claim that reads the folder once); with ``halving``, each claim
    as a packed halving worker makes it: the rungs advanced under the lock, then a pack of two of
    what may train."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from gatedrnn.store.queue import Queue
        configs = json.load(open({str(configs_file)!r}))
        q = Queue({str(root)!r})
        if {halving!r}:
            from gatedrnn.running.halving import Halving
            h = Halving(q.folder, 3, [10, 30])
            def claim(worker):
                with q.locked():
                    h.advance(configs)
                return q.claim_pack(configs, worker, 2, lambda c: 0, h.trainable)
        else:
            claim = lambda worker: q.claim(configs, worker)
        q.release(claim("warm"))
        cs = [claim("w") for _ in range({claims})]
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


def counted_from_the_same_folder(tmp_path, root, n, runs, halving=False):
    """:func:`fs_calls` for each (claims, completes) of ``runs``, each from the same copy of the
    folder, its journal made current first (a worker's start is not what is counted)."""
    Queue(root).claim([], "make the journal")
    base = tmp_path / f"base-{root.name}"
    shutil.copytree(root, base)
    counts = []
    for claims, completes in runs:
        shutil.rmtree(root)
        shutil.copytree(base, root)
        counts.append(fs_calls(root, tmp_path / f"configs{n}.json", claims, completes, halving=halving))
    return counts


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")
def test_a_claim_and_a_completion_cost_the_same_system_calls_at_300_and_at_3000_configurations(tmp_path):
    per = {}
    for n in (300, 3000):
        root, _ = folder_with(tmp_path, n)
        counts = counted_from_the_same_folder(tmp_path, root, n, [(0, 0), (5, 0), (5, 5)])
        per[n] = ((counts[1] - counts[0]) / 5, (counts[2] - counts[1]) / 5)
    (claim300, complete300), (claim3000, complete3000) = per[300], per[3000]
    assert claim3000 <= 2 * claim300 and complete3000 <= 2 * complete300, per
    assert claim3000 < 150 and complete3000 < 150, per  # a few dozen, not thousands


def halving_folder_with(tmp_path, n, pending=12):
    """n configurations after rung 1 of halving with ETA 3 (rungs at 10 and 30 steps): a third
    promoted, all but ``pending`` of them finished at rung 2; the rest stopped at rung 1 (paused,
    their results written, their state in the checkpoints of packs of eight), as a packed halving
    sweep of gatedrnn before issue 41 left them."""
    root = tmp_path / f"h{n}"
    configs = numbered_configs(n)
    folder = ResultsFolder(root)
    folder.rungs_dir.mkdir(parents=True)
    ids = [c["id"] for c in configs]
    promoted, stopped = ids[: n // 3], ids[n // 3:]
    for k in (1, 2):
        folder.rung_dir(k).mkdir()
    for c in configs:
        record = {**c, "status": "done", "loss": [2.0], "training steps": 10}
        folder.rung_result(1, c["id"]).write_text(json.dumps(record))
        if c["id"] in stopped:
            folder.result(c["id"]).write_text(json.dumps({**record, "stopped at rung": True}))
        elif c["id"] in promoted[: len(promoted) - pending]:
            record = {**record, "training steps": 30}
            folder.rung_result(2, c["id"]).write_text(json.dumps(record))
            folder.result(c["id"]).write_text(json.dumps(record))
    folder.write_promotion(1, {"rung": 1, "steps": 10, "eta": 3, "promoted": promoted, "stopped": stopped})
    folder.prepare()
    for seq, at in enumerate(range(0, len(stopped), 8), 1):
        members = stopped[at: at + 8]
        pid = pack_id_of(members)
        folder.write_pack_record(pid, members, 0.0, None, "w", seq)
        folder.pack_checkpoint(pid).write_bytes(b"state")
    (tmp_path / f"configs{n}.json").write_text(json.dumps(configs))
    return root, configs


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")
def test_a_halving_claim_costs_the_same_system_calls_at_200_and_at_2000_configurations(tmp_path):
    """Successive halving's part of a claim (its rung decisions, the paused runs, the states of
    every configuration) reads what changed, not every stopped configuration's files."""
    per = {}
    for n in (200, 2000):
        root, configs = halving_folder_with(tmp_path, n)
        counts = counted_from_the_same_folder(tmp_path, root, n, [(0, 0), (6, 0)], halving=True)
        per[n] = (counts[1] - counts[0]) / 6
        claimed = [rec["rung"] for rec in ResultsFolder(root).claim_records().values()]
        assert claimed == [2] * 12  # the promoted ones, each to rung 2 (the stopped ones stay paused)
        assert len(ResultsFolder(root).pack_records()) == 6  # the claimed; the paused ones' set aside, kept
        assert len(ResultsFolder(root).pack_records(kept=True)) == math.ceil((n - n // 3) / 8)
    assert per[2000] <= 2 * per[200] and per[2000] < 500, per  # before: 628 and 3 598 at 300 and 3 000


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


def test_a_new_worker_checks_every_result_before_it_takes_the_lock(tmp_path, monkeypatch):
    """A new worker's first look reads every result once (in time proportional to the folder),
    before it takes the queue lock: under the lock it reads only what changed since, and what it
    found damaged, which it then sets aside (at 100,000 configurations the check is seconds, and
    32 workers starting together would each hold the others back that long)."""
    import contextlib

    import gatedrnn.store.queue as queue_module

    root, configs = folder_with(tmp_path, 200, pending=2)
    Queue(root).claim([], "w")  # the journal current
    victim = configs[7]["id"]
    path = ResultsFolder(root).result(victim)
    path.write_text('{"id": "' + victim + '", "status": "do')  # damaged in place: the journal still current
    reads = {"unlocked": 0, "locked": 0}
    state = {"locked": False}
    plain = queue_module.read_json

    def counting(p):
        if Path(p).parent == root and Path(p).name.endswith(".json"):
            reads["locked" if state["locked"] else "unlocked"] += 1
        return plain(p)

    monkeypatch.setattr(queue_module, "read_json", counting)
    lines = []
    q = Queue(root, report=lines.append)
    held = q._lock.held

    @contextlib.contextmanager
    def watched():
        with held():
            state["locked"] = True
            try:
                yield
            finally:
                state["locked"] = False

    q._lock.held = watched
    first = q.claim(configs, "w")
    assert reads["unlocked"] >= 198 and reads["locked"] <= 2, reads
    assert (root / f"{victim}.json.corrupt").exists() and any("a damaged result" in line for line in lines)
    taken = {first.id} | {q.claim(configs, "w").id for _ in range(2)}
    assert victim in taken  # set aside, and so trained again
    assert reads["locked"] <= 4, reads


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
