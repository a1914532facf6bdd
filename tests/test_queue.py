import json
import os
import subprocess
import sys
import time

import pytest

from gatedrnn.spec.grid import default_grid
from gatedrnn.store.folder import claim_record
from gatedrnn.store.queue import Queue, QueueError
from gatedrnn.store.status import HOST

CONFIGS = [c.to_dict(with_id=True) for c in default_grid(state_sizes=[8], layers=[1])[:3]]
REPORTS: list = []


@pytest.fixture(params=["file", "soft"])
def queue(request, tmp_path):
    (tmp_path / "res").mkdir()
    q = Queue(tmp_path / "res", lease_seconds=30, lock=request.param, retry_delay=0, report=REPORTS.append)
    # the case really is the lock it names
    import filelock

    assert isinstance(q._lock._lock, filelock.SoftFileLease if request.param == "soft" else filelock.FileLock)  # noqa
    return q


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def plant_claim(queue, cid, **fields):
    rec = {"id": cid, "worker": "other", "host": HOST, "pid": os.getpid(), "token": "t" * 32,
           "claimed": time.time(), "heartbeat": time.time(), "lease": 30.0, "attempt": 1, "progress": {}}
    rec.update(fields)
    (queue.folder.claims / f"{cid}.json").write_text(json.dumps(rec))


def test_claims_go_in_order_and_never_twice(queue):
    got = [queue.claim(CONFIGS, "w") for _ in range(4)]
    assert [c.id for c in got[:3]] == [c["id"] for c in CONFIGS]
    assert got[3] is None


def record(cid, **extra):
    """A minimal sound result record."""
    return {"id": cid, "status": "done", "loss": [2.0, 1.5], **extra}


def test_complete_writes_once_and_only_for_the_owner(queue):
    a = queue.claim(CONFIGS, "a")
    assert queue.complete(a, record(a.id, x=1))
    written = {**record(a.id, x=1), "attempts": 1, "worker": "a"}  # the queue adds the attempt and the worker
    assert json.loads(queue.folder.result(a.id).read_text()) == written
    assert not queue.complete(a, record(a.id, x=2))  # already complete, claim gone
    assert json.loads(queue.folder.result(a.id).read_text()) == written
    assert queue.claim(CONFIGS[:1], "b") is None  # a finished config is never claimed


def test_a_stale_claim_of_a_dead_pid_is_taken_over_at_once(queue):
    cid = CONFIGS[0]["id"]
    plant_claim(queue, cid, pid=dead_pid())
    c = queue.claim(CONFIGS[:1], "new")
    assert c is not None and c.took_over["worker"] == "other"


def test_a_live_claim_is_never_taken_over(queue):
    plant_claim(queue, CONFIGS[0]["id"])  # this very process: alive, fresh heartbeat
    assert queue.claim(CONFIGS[:1], "new") is None
    assert queue.status(CONFIGS[:1])["counts"]["running"] == 1


def test_other_hosts_claims_are_watched_for_a_lease_on_this_hosts_clock(queue):
    """Issue 33: another host's claim is stale when this queue has watched it unchanged for its
    lease, never because its timestamp looks old (a pid means nothing there either)."""
    cid = CONFIGS[0]["id"]
    plant_claim(queue, cid, host="elsewhere", pid=dead_pid(), heartbeat=time.time() - 3600, lease=2.0, beat=3)
    assert queue.claim(CONFIGS[:1], "new") is None and queue.watching  # first sight: watching, not stale
    time.sleep(0.2)
    plant_claim(queue, cid, host="elsewhere", pid=dead_pid(), heartbeat=time.time() - 3600, lease=2.0, beat=4)
    before = time.monotonic()
    assert queue.claim(CONFIGS[:1], "new") is None and not queue.watching  # its heartbeat changed: alive
    after = time.monotonic()  # it saw the change between before and after
    time.sleep(0.3)
    took = queue.claim(CONFIGS[:1], "new")
    assert took is None or time.monotonic() - before >= 2.0  # unchanged for less than its lease of 2 s
    time.sleep(max(0.0, after + 2.05 - time.monotonic()))
    c = took or queue.claim(CONFIGS[:1], "new")  # unchanged for a whole lease: stale
    assert c is not None and c.took_over["host"] == "elsewhere"


def test_a_heartbeat_advances_the_beat_that_other_hosts_watch(queue):
    c = queue.claim(CONFIGS[:1], "w")
    assert queue.folder.read_claim(c.id)["beat"] == 0
    assert queue.heartbeat(c) and queue.heartbeat(c)
    assert queue.folder.read_claim(c.id)["beat"] == 2


def test_a_worker_that_lost_its_claim_can_do_nothing(queue):
    a = queue.claim(CONFIGS[:1], "a")
    plant_claim(queue, a.id, pid=dead_pid())  # a's claim went stale
    b = queue.claim(CONFIGS[:1], "b")
    assert b is not None
    assert not queue.heartbeat(a) and not queue.release(a) and queue.fail(a, "x") is None
    assert not queue.complete(a, record(a.id, **{"from": "a"}))
    assert queue.complete(b, record(b.id, **{"from": "b"}))
    assert json.loads(queue.folder.result(a.id).read_text())["from"] == "b"


def test_three_failures_make_a_failed_result(queue):
    for attempt in (1, 2, 3):
        c = queue.claim(CONFIGS[:1], "w")
        assert c.attempt == attempt
        assert queue.fail(c, f"Traceback...\nValueError: boom {attempt}") == ("failed" if attempt == 3 else "retry")
    rec = json.loads(queue.folder.result(CONFIGS[0]["id"]).read_text())
    assert rec["status"] == "failed" and rec["attempts"] == 3 and rec["error"] == "ValueError: boom 3"
    assert len(rec["errors"]) == 3
    assert queue.claim(CONFIGS[:1], "w") is None


def test_release_makes_it_claimable_again(queue):
    a = queue.claim(CONFIGS[:1], "a")
    assert queue.release(a)
    assert queue.claim(CONFIGS[:1], "b") is not None


def test_unusable_results_folders_are_clear_errors(tmp_path):
    with pytest.raises(QueueError, match="no such results folder"):
        Queue(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(QueueError, match="not a directory"):
        Queue(tmp_path / "file")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(QueueError, match="not writable"):
            Queue(ro)


def test_lock_timeout_names_the_holder(tmp_path):
    (tmp_path / "res").mkdir()
    q = Queue(tmp_path / "res", lock="soft", lock_timeout=0.3)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); from gatedrnn.store.queue import Queue\n"
        "q = Queue(%r, lock='soft')\n"
        "with q.locked():\n    print('in', flush=True); time.sleep(30)") % (str(__import__('helpers').ROOT), str(tmp_path / "res"))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "in"
        with pytest.raises(QueueError, match=f"{HOST}:{holder.pid}"):
            q.claim(CONFIGS, "w")
    finally:
        holder.kill()
        holder.wait()
    assert q.claim(CONFIGS, "w") is not None  # a dead holder's soft lock is cleared



def test_a_folder_that_used_the_file_lock_takes_the_soft_lock_and_back(tmp_path):
    """The file lock's file stays after it is released (removing a flock file races); the soft
    lock uses another file, so a folder moved to NFS (``--lock soft``) does not wait for ever on
    the file kind's empty leftover, and a soft marker left by a killed holder is no obstacle to
    the file kind."""
    (tmp_path / "res").mkdir()
    q = Queue(tmp_path / "res", lock="file", lock_timeout=2)
    assert q.claim(CONFIGS[:1], "w") is not None
    assert (tmp_path / "res" / ".queue" / "lock").exists()
    soft = Queue(tmp_path / "res", lock="soft", lock_timeout=2)
    assert soft.claim(CONFIGS[1:2], "w") is not None
    assert not (tmp_path / "res" / ".queue" / "lock.soft").exists()  # released: the marker removed
    (tmp_path / "res" / ".queue" / "lock.soft").write_text("pid=1\nhost=elsewhere\n")
    assert Queue(tmp_path / "res", lock="file", lock_timeout=2).claim(CONFIGS[2:3], "w") is not None


def test_an_older_versions_soft_marker_is_refused_in_one_line(tmp_path):
    """gatedrnn before the journal put the soft marker at ``.queue/lock``: a soft lock at the
    new path would not exclude its holder, so a worker refuses to start, naming the file."""
    (tmp_path / "res" / ".queue").mkdir(parents=True)
    old = tmp_path / "res" / ".queue" / "lock"
    old.write_text("pid=4242\nhost=elsewhere\ntoken=abc\n")
    with pytest.raises(QueueError, match=r"\.queue/lock: a soft queue lock taken by an older gatedrnn") as e:
        Queue(tmp_path / "res", lock="soft", lock_timeout=1)
    assert "\n" not in str(e.value) and old.exists()
    assert Queue(tmp_path / "res", lock="file", lock_timeout=1).claim(CONFIGS[:1], "w") is not None
    old.unlink()
    assert Queue(tmp_path / "res", lock="soft", lock_timeout=1).claim(CONFIGS[1:2], "w") is not None


def test_a_soft_lock_left_by_another_hosts_dead_holder_is_cleared_after_its_lifetime(tmp_path):
    """Killed holding the soft lock on another host (its name, its clock an hour ahead): no one
    here can ask that host whether the holder lives, so the marker is cleared only after being
    watched unchanged for the lock's lifetime, on this host's monotonic clock."""
    from helpers import ROOT

    (tmp_path / "res").mkdir()
    lifetime = 3.0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom gatedrnn.store.queue import Queue\n"
        "q = Queue(%r, lock='soft', lock_lifetime=%r)\n"
        "with q.locked():\n    print('in', flush=True); time.sleep(60)") % (str(tmp_path / "res"), lifetime)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'clockskew'}:{ROOT}",
             "GATEDRNN_TEST_HOST": "elsewhere", "GATEDRNN_TEST_CLOCK_SHIFT": "3600"})
    try:
        assert holder.stdout.readline().strip() == "in"
    finally:
        holder.kill()
        holder.wait()
    assert "host=elsewhere" in (tmp_path / "res" / ".queue" / "lock.soft").read_text()
    q = Queue(tmp_path / "res", lock="soft", lock_timeout=0.5, lock_lifetime=lifetime)
    start = time.monotonic()
    with pytest.raises(QueueError, match="elsewhere"):  # not cleared at once: the holder may live
        q.claim(CONFIGS, "w")
    q = Queue(tmp_path / "res", lock="soft", lock_timeout=30, lock_lifetime=lifetime)
    assert q.claim(CONFIGS, "w") is not None
    assert time.monotonic() - start >= lifetime


def test_a_live_claim_silenced_by_a_stuck_lock_is_not_taken_when_the_lock_clears(tmp_path):
    """Another host's worker that could not heartbeat while the soft lock was stuck (its holder
    killed) keeps its claim: the stall is no sign of its death."""
    from helpers import ROOT

    (tmp_path / "res").mkdir()
    lifetime = 3.0
    q = Queue(tmp_path / "res", lease_seconds=2.0, lock="soft", lock_timeout=30, lock_lifetime=lifetime)
    theirs = claim_record(CONFIGS[0]["id"], "w", "elsewhere", 4242, None, "t", time.time(), 2.0, 1)
    q.folder.write_claim(theirs)
    assert q.claim(CONFIGS[:1], "me") is None and q.watching  # seen once: watching
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom gatedrnn.store.queue import Queue\n"
        "q = Queue(%r, lock='soft', lock_lifetime=%r)\n"
        "with q.locked():\n    print('in', flush=True); time.sleep(60)") % (str(tmp_path / "res"), lifetime)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'clockskew'}:{ROOT}", "GATEDRNN_TEST_HOST": "third"})
    try:
        assert holder.stdout.readline().strip() == "in"
    finally:
        holder.kill()
        holder.wait()
    assert q.claim(CONFIGS[:1], "me") is None  # waited out the stuck lock; the claim's silence was its doing
    time.sleep(2.1)  # a lease after the stall, still silent: now it is dead
    assert q.claim(CONFIGS[:1], "me") is not None

CORRUPT_CLAIMS = {
    "lease null": lambda cid: json.dumps({**good_claim(cid), "lease": None}),
    "heartbeat a string": lambda cid: json.dumps({**good_claim(cid), "heartbeat": "abc"}),
    "heartbeat 1e400": lambda cid: json.dumps(good_claim(cid)).replace('"heartbeat": 1', '"heartbeat": 1e400, "x": 1'),
    "no id": lambda cid: json.dumps({k: v for k, v in good_claim(cid).items() if k != "id"}),
    "pid a string": lambda cid: json.dumps({**good_claim(cid), "pid": "1234"}),
    "half-written": lambda cid: json.dumps(good_claim(cid))[:40],
    "a list": lambda cid: "[1, 2, 3]",
    "empty": lambda cid: "",
    "binary": lambda cid: "\x00\xff\xfe",
}


def good_claim(cid):
    # a live claim in every respect but the damage: this process, a fresh heartbeat
    return {"id": cid, "worker": "other", "host": HOST, "pid": os.getpid(), "token": "t" * 32,
            "claimed": 1.0, "heartbeat": time.time(), "lease": 30.0, "attempt": 1, "progress": {}}


@pytest.mark.parametrize("shape", CORRUPT_CLAIMS)
def test_a_damaged_claim_record_is_reported_set_aside_and_taken_over(queue, shape):
    cid = CONFIGS[0]["id"]
    path = queue.folder.claim(cid)
    path.write_text(CORRUPT_CLAIMS[shape](cid))
    REPORTS.clear()
    status = queue.status(CONFIGS[:1])  # a snapshot neither crashes nor counts it as running
    assert status["counts"]["pending"] == 1
    c = queue.claim(CONFIGS[:1], "new")
    assert c is not None and c.took_over is None
    assert len(REPORTS) == 1 and str(path) in REPORTS[0] and "damaged claim" in REPORTS[0]
    assert (path.parent / f"{cid}.json.corrupt").exists()
    assert json.loads(path.read_text())["worker"] == "new"


def test_a_sound_claim_of_this_process_is_not_mistaken_for_damage(queue):
    cid = CONFIGS[0]["id"]
    queue.folder.claim(cid).write_text(json.dumps(good_claim(cid)))
    assert queue.claim(CONFIGS[:1], "new") is None


@pytest.mark.parametrize("damage", ['{"status": "done", "lo', '{"id": "abc", "status": "done", "loss": []}',
                                    '{"status": "done", "loss": [], "log every": "abc"}', "", "[]"])
def test_a_damaged_result_is_set_aside_and_the_configuration_trained_again(queue, damage):
    cid = CONFIGS[0]["id"]
    queue.folder.result(cid).write_text(damage.replace('"status"', f'"id": "{cid}", "status"', 1)
                                        if "abc" not in damage and damage.startswith("{") else damage)
    REPORTS.clear()
    assert queue.status(CONFIGS[:1])["counts"]["pending"] == 1
    c = queue.claim(CONFIGS[:1], "w")
    assert c is not None and c.id == cid
    assert len(REPORTS) == 1 and "damaged result" in REPORTS[0]
    assert (queue.dir / f"{cid}.json.corrupt").exists() and not queue.folder.result(cid).exists()


def test_attempts_are_spread_over_time(tmp_path):
    (tmp_path / "res").mkdir()
    q = Queue(tmp_path / "res", retry_delay=0.4)
    c = q.claim(CONFIGS[:1], "w")
    assert q.fail(c, "Traceback\nValueError: x") == "retry"
    assert q.claim(CONFIGS[:1], "w") is None  # not yet
    wait = q.next_retry(CONFIGS)
    assert 0 < wait <= 0.4
    time.sleep(wait + 0.05)
    c = q.claim(CONFIGS[:1], "w")
    assert c is not None and c.attempt == 2
    assert q.fail(c, "Traceback\nValueError: x") == "retry"
    assert 0.4 < q.next_retry(CONFIGS) <= 0.8  # the wait doubles
    # another process sees the delay from when it first sees the failure, whatever the clocks say
    other = Queue(tmp_path / "res", retry_delay=0.4)
    rec = other.folder.read_attempts(c.id)
    other.folder.write_attempts(c.id, {**rec, "retry after": rec["retry after"] + 3600})  # a host an hour ahead
    assert 0.7 < other.next_retry(CONFIGS) <= 0.8


def test_reopen_failed_keeps_the_old_record_as_history(queue):
    for _ in range(3):
        queue.fail(queue.claim(CONFIGS[:1], "w"), "Traceback\nValueError: boom")
    cid = CONFIGS[0]["id"]
    old = queue.folder.result(cid).read_bytes()
    assert queue.reopen_failed(CONFIGS) == 1
    assert not queue.folder.result(cid).exists()
    assert (queue.dir / f"{cid}.failed-1.json").read_bytes() == old
    assert [p.name for p in queue.folder.result_files()] == []  # history is not a result
    c = queue.claim(CONFIGS[:1], "w")
    assert c is not None and c.attempt == 1
    assert queue.reopen_failed(CONFIGS) == 0


def test_the_folder_records_its_settings_and_refuses_others(queue):
    from gatedrnn.store.queue import SettingsMismatch

    base = {"steps": 300, "batch_size": 8, "history": 50, "lr": 0.001, "log_every": 50, "eval_every": 0,
            "seed": 0, "val_streams": 8, "dataset sha256": "ab"}
    queue.record_settings(base)
    queue.record_settings(dict(base))  # the same again: fine
    with pytest.raises(SettingsMismatch, match="steps=300.*steps=400.*--steps"):
        queue.record_settings({**base, "steps": 400})
    queue.folder.settings_file.write_text("{")
    REPORTS.clear()
    queue.record_settings({**base, "steps": 400})  # a damaged record is set aside and recorded anew
    assert "damaged settings" in REPORTS[0]
    assert json.loads(queue.folder.settings_file.read_text())["steps"] == 400
