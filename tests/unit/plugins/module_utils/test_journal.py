from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import journal as journal_module
from ansible_collections.hosting.migration.plugins.module_utils.journal import (
    DEFAULT_ROOT,
    Journal,
    JournalError,
    LockedError,
    write_json_atomic,
)

COLLECTIONS = str(Path(__file__).resolve().parents[4] / "collections")

# A separate process that takes alice's lock, says so on stdout, and keeps it until killed.
HOLDER = """
import sys, time
from ansible_collections.hosting.migration.plugins.module_utils.journal import Journal
with Journal(sys.argv[1]).lock("alice", "move client->transit") as run:
    run.finish_phase("precopy", {"bytes": 42})
    run.report("final_delta", bytes_done=10, bytes_total=100, force=True)
    print("locked", flush=True)
    time.sleep(600)
"""


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def journal(tmp_path):
    return Journal(str(tmp_path / "journal"))


@pytest.fixture
def holder(tmp_path):
    """Start a process holding alice's lock; yields it and kills it at the end if it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "journal")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": COLLECTIONS},
    )
    assert proc.stdout.readline() == "locked\n"
    yield proc
    proc.kill()
    proc.wait()


def test_default_root():
    assert Journal().root == DEFAULT_ROOT == "/var/lib/hosting-migration"


def test_relative_root_is_refused():
    with pytest.raises(ValueError, match="absolute"):
        Journal("var/lib/hosting-migration")


@pytest.mark.parametrize("name", ["../etc", "alice/..", "-rf", "Alice", "a", "alice\n", "", "a;b", None])
def test_hostile_account_names_are_refused_before_any_path(journal, name):
    for call in (journal.read_state, journal.read_progress, journal.state_path, journal.progress_path):
        with pytest.raises(ValueError, match="account name"):
            call(name)
    with pytest.raises(ValueError, match="account name"):
        journal.lock(name, "move")
    assert not os.path.exists(journal.root)


def test_reading_an_unknown_account_writes_nothing(journal):
    """Check mode reads the journal: that must not create it."""
    assert journal.read_state("alice") == {
        "version": 1,
        "account": "alice",
        "location": None,
        "phases": {},
        "history": [],
    }
    assert journal.read_progress("alice") is None
    assert not os.path.exists(journal.root)


def test_layout_and_modes(journal, tmp_path):
    with journal.lock("alice", "move"):
        pass
    account_dir = tmp_path / "journal" / "accounts" / "alice"
    assert sorted(os.listdir(account_dir)) == ["lock", "progress.json", "state.json"]
    for directory in (tmp_path / "journal", tmp_path / "journal" / "accounts", account_dir):
        assert mode(directory) == 0o700
    for name in ("lock", "progress.json", "state.json"):
        assert mode(account_dir / name) == 0o600
    assert journal.state_path("alice") == str(account_dir / "state.json")
    assert journal.progress_path("alice") == str(account_dir / "progress.json")


def test_modes_do_not_depend_on_the_umask(journal):
    old = os.umask(0)
    try:
        with journal.lock("alice", "move"):
            pass
    finally:
        os.umask(old)
    assert mode(journal.account_dir("alice")) == 0o700
    assert mode(journal.state_path("alice")) == 0o600


def test_existing_root_keeps_its_mode(tmp_path):
    """Only directories the journal creates are made 0700: a misconfigured root like /var/lib stays as it was."""
    root = tmp_path / "shared"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    with Journal(str(root)).lock("alice", "move"):
        pass
    assert mode(root) == 0o755


def test_state_phases_location_and_history_persist(journal):
    with journal.lock("alice", "move client->transit") as run:
        assert run.state["history"][-1]["outcome"] == "running"
        assert not run.phase_done("precopy")
        run.finish_phase("precopy", {"bytes": 1234, "seconds": 1.5})
        run.set_location("client")
        run.state["domains"] = ["alice-shop.test"]  # the caller's own keys travel too
        run.save()
    state = journal.read_state("alice")
    assert state["location"] == "client"
    assert state["phases"]["precopy"]["data"] == {"bytes": 1234, "seconds": 1.5}
    assert state["domains"] == ["alice-shop.test"]
    (entry,) = state["history"]
    assert entry["operation"] == "move client->transit"
    assert entry["outcome"] == "finished"
    assert entry["phases"] == ["precopy"]
    assert entry["pid"] == os.getpid()
    assert entry["hostname"] == socket.gethostname()
    assert entry["started_at"] <= entry["finished_at"] <= state["updated_at"]

    with journal.lock("alice", "move again") as run:
        assert run.phase_done("precopy")
        assert run.location == "client"
        run.reset_phases()
        assert not run.phase_done("precopy")
    state = journal.read_state("alice")
    assert state["phases"] == {}
    assert [e["operation"] for e in state["history"]] == ["move client->transit", "move again"]


def test_an_exception_is_recorded_and_releases_the_lock(journal):
    with pytest.raises(RuntimeError, match="rsync exited 12"):
        with journal.lock("alice", "move"):
            raise RuntimeError("rsync exited 12")
    entry = journal.read_state("alice")["history"][-1]
    assert entry["outcome"] == "failed"
    assert entry["error"] == "RuntimeError: rsync exited 12"
    assert journal.read_progress("alice")["status"] == "failed"
    with journal.lock("alice", "move"):
        pass


def test_state_is_written_atomically_and_durably(journal, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    with journal.lock("alice", "move") as run:
        synced.clear()
        run.finish_phase("precopy")
        account_dir = journal.account_dir("alice")
        # The data of the temporary file, then the directory holding the renamed entry.
        assert [os.path.dirname(synced[0]), synced[1]] == [account_dir, account_dir]
        assert os.path.basename(synced[0]).startswith(".state.json.")
        synced.clear()
        run.report("final_delta", force=True)
        assert synced == []  # the progress file is not worth an fsync
    monkeypatch.setattr(journal_module.os, "fsync", real_fsync)
    assert sorted(os.listdir(journal.account_dir("alice"))) == ["lock", "progress.json", "state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(str(path), {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"not json": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_foreign_state_file_is_refused(journal):
    with journal.lock("alice", "move"):
        pass
    path = journal.state_path("alice")
    with open(path, "w") as handle:
        json.dump({"version": 99, "account": "alice"}, handle)
    with pytest.raises(JournalError, match="not a version 1 state of account alice"):
        journal.read_state("alice")
    with open(path, "w") as handle:
        handle.write("{truncated")
    with pytest.raises(JournalError, match="cannot read journal file .*state.json"):
        journal.read_state("alice")


def test_save_outside_the_lock_is_refused(journal):
    with journal.lock("alice", "move") as run:
        pass
    with pytest.raises(JournalError, match="outside its lock"):
        run.save()


def test_progress_file_for_pollers(journal, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(journal_module.time, "monotonic", lambda: clock[0])
    with journal.lock("alice", "move client->transit") as run:
        progress = journal.read_progress("alice")
        assert progress["status"] == "running"
        assert progress["operation"] == "move client->transit"
        assert progress["pid"] == os.getpid()
        assert progress["phase"] is None

        run.report("precopy", bytes_done=0, bytes_total=5000)  # a new phase is written at once
        assert journal.read_progress("alice")["bytes_total"] == 5000
        run.report("precopy", bytes_done=100)  # within a second: kept for later
        assert journal.read_progress("alice")["bytes_done"] == 0
        clock[0] += 1.0
        run.report("precopy", bytes_done=200)
        progress = journal.read_progress("alice")
        assert (progress["phase"], progress["bytes_done"], progress["bytes_total"]) == ("precopy", 200, 5000)
        run.report("precopy", bytes_done=300, force=True)
        assert journal.read_progress("alice")["bytes_done"] == 300

        run.report("databases", tables_done=1, tables_total=7)  # counters of the last phase do not leak
        progress = journal.read_progress("alice")
        assert progress["bytes_done"] is None
        assert (progress["tables_done"], progress["tables_total"]) == (1, 7)
    progress = journal.read_progress("alice")
    assert progress["status"] == "finished"
    assert progress["updated_at"] >= progress["started_at"]


def test_a_second_lock_in_the_same_process_fails_fast(journal):
    with journal.lock("alice", "move client->transit") as run:
        started = time.monotonic()
        with pytest.raises(LockedError) as raised:
            with journal.lock("alice", "rollback"):
                pytest.fail("two runs held alice's lock")
        assert time.monotonic() - started < 1
        error = raised.value
        assert error.account == "alice"
        assert error.holder["pid"] == os.getpid()
        assert str(error) == (
            f"account alice is locked by pid {os.getpid()} on {socket.gethostname()} "
            f"(operation 'move client->transit', since {run.state['history'][-1]['started_at']})"
        )
        # Another account is not affected.
        with journal.lock("bob", "move"):
            pass
    # The failed attempt changed nothing in alice's journal.
    assert [e["operation"] for e in journal.read_state("alice")["history"]] == ["move client->transit"]


def test_lock_held_by_another_process_fails_fast_naming_it(journal, holder):
    started = time.monotonic()
    with pytest.raises(LockedError, match=rf"locked by pid {holder.pid} on .*operation 'move client->transit'"):
        with journal.lock("alice", "move"):
            pass
    assert time.monotonic() - started < 1
    # The holder's progress is readable while it works (what the role polls).
    progress = journal.read_progress("alice")
    assert (progress["pid"], progress["phase"], progress["bytes_done"]) == (holder.pid, "final_delta", 10)


def test_lock_of_a_sigkilled_process_is_reclaimed(journal, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with journal.lock("alice", "move again") as run:
        # The dead run is named, its history entry closed as interrupted, its finished phase kept for resuming.
        assert run.reclaimed["pid"] == holder.pid
        assert run.reclaimed["operation"] == "move client->transit"
        dead, current = run.state["history"]
        assert (dead["pid"], dead["outcome"], dead["phases"]) == (holder.pid, "interrupted", ["precopy"])
        assert current["outcome"] == "running"
        assert run.phase_done("precopy")
    with journal.lock("alice", "move") as run:
        assert run.reclaimed is None  # a clean release leaves nothing to reclaim


def test_tools_started_under_the_lock_do_not_keep_it(journal):
    """The lock's descriptor is not inherited: an rsync or ssh left running by a dead run cannot hold the lock."""
    with journal.lock("alice", "move"):
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        with journal.lock("alice", "move"):
            pass
    finally:
        child.kill()
        child.wait()


def test_server_records_round_trip_and_are_private(tmp_path):
    journal = Journal(str(tmp_path))
    assert journal.read_record("ip_reroute") is None
    journal.write_record("ip_reroute", {"routes": ["198.51.100.10/32 via 10.77.0.10"]})
    assert journal.read_record("ip_reroute") == {"routes": ["198.51.100.10/32 via 10.77.0.10"]}
    path = tmp_path / "server" / "ip_reroute.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    journal.write_record("dns_redirect.alice-shop.test", {"zone": "alice-shop.test"})
    assert journal.read_record("dns_redirect.alice-shop.test") == {"zone": "alice-shop.test"}
    assert journal.delete_record("ip_reroute") is True
    assert journal.delete_record("ip_reroute") is False
    assert journal.read_record("ip_reroute") is None


@pytest.mark.parametrize("name", ["", "../x", "a/b", "A", "x..y", ".x", "x\x00", "-x", "a" * 65])
def test_server_record_names_are_validated(tmp_path, name):
    with pytest.raises(ValueError):
        Journal(str(tmp_path)).record_path(name)


def test_a_server_lock_is_exclusive_names_its_holder_and_dies_with_its_process(tmp_path):
    journal = Journal(str(tmp_path))
    with journal.server_lock("ip_reroute", "reroute to transit"):
        with pytest.raises(LockedError, match=r"server operation ip_reroute is locked by pid \d+ .*reroute to transit"):
            with journal.server_lock("ip_reroute", "restore"):
                pass
        with journal.server_lock("dns_redirect.alice-shop.test", "redirect"):
            pass
    with journal.server_lock("ip_reroute", "restore"):
        pass
    assert not (tmp_path / "server" / "ip_reroute.holder.json").exists()
    # A holder killed with SIGKILL leaves its holder file; the kernel releases the flock all the same.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path[:0] = sys.argv[2:]\n"
         "from ansible_collections.hosting.migration.plugins.module_utils.journal import Journal\n"
         "lock = Journal(sys.argv[1]).server_lock('ip_reroute', 'killed')\n"
         "lock.__enter__()\nprint('held', flush=True)\n"
         "time.sleep(60)", str(tmp_path), *sys.path],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match="killed"):
        journal.server_lock("ip_reroute", "second").__enter__()
    child.kill()
    child.wait()
    with journal.server_lock("ip_reroute", "after the kill"):
        pass
