"""The lock-free snapshot of a sweep (gatedrnn/status.py): counts, live and stale claims, the
ETA, the lines the live display and `gatedrnn status` print."""

import os
import subprocess
import sys
import time
from pathlib import Path

from gatedrnn import RNNConfig
from gatedrnn.store.folder import claim_record
from gatedrnn.store.queue import Queue
from gatedrnn.store.status import (HOST, LIVE, STALE, WATCHING, Liveness, claim_is_live, eta_seconds, format_live, format_snapshot, labels_of, pid_alive,
                             recorded_config_file, snapshot, sweep_status)

CONFIGS = [RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=8 + k).to_dict(with_id=True) for k in range(4)]


def test_pid_alive_sees_zombies_and_reused_pids():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{p.pid}/stat")
    deadline = time.monotonic() + 60
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)  # until it has exited, not reaped: a zombie
    assert not pid_alive(p.pid)
    p.wait()
    assert pid_alive(os.getpid())
    assert not pid_alive(os.getpid(), start="not-my-start-time")


def test_progress_shows_a_pack_as_one_line_with_its_best_member():
    running = [{"id": "a" * 64, "worker": "w0", "pack": "p1", "progress": {"step": 10, "loss": 2.5,
                                                                          "steps per second": 100}},
               {"id": "b" * 64, "worker": "w0", "pack": "p1", "progress": {"step": 10, "loss": 2.1,
                                                                          "steps per second": 100}},
               {"id": "c" * 64, "worker": "w1", "progress": {"step": 5, "loss": 3.0, "steps per second": 50}}]
    status = {"counts": {"done": 0, "diverged": 0, "failed": 0, "running": 3, "pending": 0}, "total": 3,
              "running": running}
    lines = format_live(status, 100, {"a" * 64: "IFOSNPR L1 d32", "c" * 64: "....N.R L2 d8"})
    assert len(lines) == 3
    assert "pack of 2 (L1 d32)" in lines[1] and "best loss 2.1000" in lines[1]
    assert "....N.R L2 d8" in lines[2] and "loss 3.0000" in lines[2]


def test_liveness_is_the_heartbeat_and_on_this_host_the_process():
    now = time.time()
    mine = claim_record("x" * 64, "w", HOST, os.getpid(), None, "t", now, 60.0, 1)
    assert claim_is_live(mine, 60.0, now)
    assert not claim_is_live(mine, 60.0, now + 61)  # the heartbeat is older than the lease
    assert not claim_is_live({**mine, "pid": 2**22 + 12345}, 60.0, now)  # no such process here
    assert not claim_is_live({**mine, "heartbeat": "soon"}, 60.0, now) and not claim_is_live([1], 60.0, now)


def test_another_hosts_claim_is_judged_by_watching_its_heartbeat_change_on_this_hosts_clock():
    """Issue 33: another host's timestamps are never compared with this host's clock. A claim
    first seen is being watched; seen changing, live; watched unchanged for its lease, stale,
    however old or new its timestamp reads."""
    cid = "x" * 64
    watcher = Liveness(60.0)
    far_behind = {**claim_record(cid, "w", "another-host", 2**22 + 12345, None, "t", time.time() - 3600, 10.0, 1)}
    assert watcher.judge(cid, far_behind, now=100.0) == WATCHING  # an hour "old": not stale at first sight
    assert watcher.judge(cid, far_behind, now=105.0) == WATCHING
    beat = {**far_behind, "beat": 1}
    assert watcher.judge(cid, beat, now=107.0) == LIVE  # it changed: alive, whatever its clock says
    assert watcher.judge(cid, beat, now=116.9) == LIVE
    assert watcher.judge(cid, beat, now=117.0) == STALE  # unchanged for its own lease of 10 s
    ahead = {**claim_record(cid, "w", "another-host", 2**22 + 12345, None, "u", time.time() + 3600, 10.0, 1)}
    assert Liveness(60.0).judge(cid, ahead, now=0.0) == WATCHING  # an hour "ahead": not live for long either
    fresh = Liveness(60.0)
    fresh.judge(cid, ahead, now=0.0)
    assert fresh.judge(cid, ahead, now=10.0) == STALE
    age, watched = fresh.age(cid, ahead, now=12.0)
    assert age == 12.0 and not watched
    mine = claim_record(cid, "w", HOST, os.getpid(), None, "t", time.time() - 5, 60.0, 1)
    assert Liveness(60.0).judge(cid, mine) == LIVE and 4 < Liveness(60.0).age(cid, mine)[0] < 10  # this host's clock



def test_after_the_lock_stalled_a_silent_claim_gets_a_lease_to_beat_again():
    """No one can heartbeat while the queue's lock is stuck, so the silence it caused is not a
    sign of death: for a lease after the stall ends, only a claim of this host whose process is
    gone is stale."""
    cid = "x" * 64
    other = claim_record(cid, "w", "another-host", 2**22 + 12345, None, "t", time.time(), 10.0, 1)
    watcher = Liveness(60.0)
    watcher.judge(cid, other, now=0.0)
    watcher.stalled(now=60.0)  # the lock taken after a minute's wait
    assert watcher.judge(cid, other, now=60.0) == WATCHING and watcher.judge(cid, other, now=69.9) == WATCHING
    assert watcher.judge(cid, other, now=70.0) == STALE  # a lease after the stall, still silent
    unstalled = Liveness(60.0)
    unstalled.judge(cid, other, now=0.0)
    assert unstalled.judge(cid, other, now=60.0) == STALE
    silent_here = claim_record(cid, "w", HOST, os.getpid(), None, "t", time.time() - 30, 10.0, 1)
    watcher.stalled()
    assert watcher.judge(cid, silent_here) == WATCHING and Liveness(60.0).judge(cid, silent_here) == STALE
    dead_here = {**silent_here, "pid": 2**22 + 12345}
    assert watcher.judge(cid, dead_here) == STALE  # its process is gone: certain, stall or not

def test_the_eta_is_work_left_over_the_speed_of_the_running_workers():
    counts = {"done": 1, "diverged": 0, "failed": 0, "running": 2, "pending": 2}
    progress = [{"step": 50, "steps per second": 10}, {"step": 150, "steps per second": 30}]
    assert eta_seconds(counts, progress, 200) == (2 * 200 + 150 + 50) / 40
    assert eta_seconds(counts, [{"step": 5}], 200) is None  # nobody reports a speed
    assert eta_seconds({**counts, "running": 0, "pending": 0}, [], 200) == 0.0


def test_a_snapshot_sorts_claims_into_live_and_stale_and_lists_failures(tmp_path):
    (tmp_path / "r").mkdir()
    q = Queue(tmp_path / "r", retry_delay=0)
    q.record_config_file(tmp_path / "configs.json")
    live = q.claim(CONFIGS, "alive")
    gone = q.claim(CONFIGS, "gone")
    rec = q.folder.read_claim(gone.id)
    q.folder.write_claim({**rec, "pid": 2**22 + 12345})  # its process is gone: stale
    for _ in range(3):
        q.fail(q.claim(CONFIGS[2:3], "bad"), "Traceback\nValueError: boom")
    q.heartbeat(live, {"step": 7, "loss": 2.5, "steps per second": 10.0})
    snap = snapshot(tmp_path / "r", CONFIGS, steps=100)
    assert snap["counts"] == {"done": 0, "diverged": 0, "failed": 1, "running": 1, "pending": 2}
    assert [r["id"] for r in snap["running"]] == [live.id] and [r["id"] for r in snap["stale"]] == [gone.id]
    assert snap["failed"][0]["error"] == "ValueError: boom" and snap["work left"]
    assert snap["eta seconds"] == (2 * 100 + 93) / 10.0
    text = format_snapshot(snap, "configs.json", labels_of(CONFIGS))
    assert "running 1 · pending 2 (of 4)" in text and "stale claims" in text and "ValueError: boom" in text
    assert sweep_status(tmp_path / "r", CONFIGS)["counts"] == snap["counts"]
    assert recorded_config_file(tmp_path / "r") == (tmp_path / "configs.json").resolve()
