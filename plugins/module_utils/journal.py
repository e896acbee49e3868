# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration journal of DESIGN §1: per account, where it is, which phases finished, the history of operations,
a progress file for pollers and a lock that a killed run cannot leave behind.

Layout under the root (default /var/lib/hosting-migration), directories 0700, files 0600:

    accounts/<account>/state.json     where the account is, finished phases, history (written atomically, fsynced)
    accounts/<account>/progress.json  phase, bytes and tables done, rewritten often for pollers (atomic, no fsync)
    accounts/<account>/lock           flock(2)ed by the running operation; never removed, so the lock keeps its inode
    accounts/<account>/holder.json    who holds the lock: pid, hostname, operation, start time
    server/<record>.json              server-level state a module must restore exactly (e.g. ip_reroute's previous
                                      routes, dns_redirect's zone snapshots): Journal.read_record/write_record

Use:

    journal = Journal()
    with journal.lock("alice", "move client->transit") as run:  # LockedError at once if another run holds it
        if not run.phase_done("precopy"):
            ...
            run.finish_phase("precopy", {"bytes": 123})
        run.report("databases", tables_done=3, tables_total=10)
        run.set_location("transit")

Reading (check mode, pollers) never writes: Journal.read_state(), Journal.read_progress().
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import tempfile
import time
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

DEFAULT_ROOT = "/var/lib/hosting-migration"
STATE_VERSION = 1
# Names of server-level records: one file per module concern, e.g. "ip_reroute" or "dns_redirect.alice-shop.test".
_RECORD_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}(?:\.[a-z0-9][a-z0-9_-]{0,62}){0,8}")
# report() rewrites progress.json at most this often (seconds) unless the phase changes or force=True.
PROGRESS_INTERVAL = 1.0


class JournalError(Exception):
    """The journal cannot be read or written."""


class LockedError(JournalError):
    """Another live run holds the account's lock; `holder` says who (empty if it has not said yet)."""

    def __init__(self, account: str, holder: dict[str, Any], kind: str = "account") -> None:
        self.account = account
        self.holder = holder
        if holder:
            who = (
                f"pid {holder.get('pid')} on {holder.get('hostname')} "
                f"(operation {holder.get('operation')!r}, since {holder.get('started_at')})"
            )
        else:
            who = "a run that has not written its holder information yet"
        super().__init__(f"{kind} {account} is locked by {who}")


def utc_now() -> str:
    # Not datetime.UTC (Python 3.11+): the journal also runs on old-generation servers with an older python3.
    return datetime.now(timezone.utc).isoformat(timespec="seconds")  # noqa: UP017


def _ensure_dir(path: str) -> None:
    """Create `path` and missing parents with mode 0700; existing directories are left as they are."""
    if os.path.isdir(path):
        return
    _ensure_dir(os.path.dirname(path))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(
    path: str, data: bytes, durable: bool = True, mode: int | None = None, owner: tuple[int, int] | None = None
) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new file, never a mix.

    The temporary file lies in the same directory (a rename is atomic only within one file system) and is created
    0600 by mkstemp unless `mode` (and `owner`, a (uid, gid) pair) say otherwise. With `durable`, the data and then
    the directory entry are fsynced, so after a crash the file holds the old or the new content, not an empty one.
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if owner is not None:
                os.fchown(handle.fileno(), *owner)
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(directory)


def write_json_atomic(path: str, data: Any, durable: bool = True) -> None:
    """write_bytes_atomic of `data` as indented JSON (0600)."""
    write_bytes_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"), durable)


def _read_json(path: str) -> Any:
    """The JSON in `path`, or None if there is no such file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise JournalError(f"cannot read journal file {path}: {exc}") from exc


def empty_state(account: str) -> dict[str, Any]:
    return {"version": STATE_VERSION, "account": account, "location": None, "phases": {}, "history": []}


class Journal:
    """The journal under `root`. Every method validates the account name before touching a path."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        if not os.path.isabs(root):
            raise ValueError(f"journal root must be an absolute path, got {root!r}")
        self.root = root

    def account_dir(self, account: str) -> str:
        return os.path.join(self.root, "accounts", validate_account_name(account))

    def state_path(self, account: str) -> str:
        return os.path.join(self.account_dir(account), "state.json")

    def progress_path(self, account: str) -> str:
        """The file a poller reads (e.g. with ansible.builtin.slurp) while a run works."""
        return os.path.join(self.account_dir(account), "progress.json")

    def read_state(self, account: str) -> dict[str, Any]:
        """The account's state; a fresh empty one (not written) if the journal has none."""
        path = self.state_path(account)
        state = _read_json(path)
        if state is None:
            return empty_state(account)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("account") != account:
            raise JournalError(f"journal file {path} is not a version {STATE_VERSION} state of account {account}")
        return state

    def read_progress(self, account: str) -> dict[str, Any] | None:
        return _read_json(self.progress_path(account))

    def record_path(self, name: str) -> str:
        if not isinstance(name, str) or not _RECORD_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid journal record name {name!r}")
        return os.path.join(self.root, "server", name + ".json")

    def read_record(self, name: str) -> Any:
        """The server-level record `name`, or None if the journal has none."""
        return _read_json(self.record_path(name))

    def write_record(self, name: str, data: Any) -> None:
        """Replace the server-level record `name` atomically and durably (the directory is created 0700)."""
        path = self.record_path(name)
        _ensure_dir(os.path.dirname(path))
        write_json_atomic(path, data)

    def delete_record(self, name: str) -> bool:
        """Remove the record; False if there was none."""
        try:
            os.unlink(self.record_path(name))
        except FileNotFoundError:
            return False
        fsync_dir(os.path.dirname(self.record_path(name)))
        return True

    def server_lock(self, name: str, operation: str) -> ServerLock:
        """A context manager holding the server-level lock `name` (a record name) for `operation`."""
        return ServerLock(self, name, operation)

    def lock(self, account: str, operation: str) -> AccountRun:
        """A context manager holding the account's lock for `operation` (a short label kept in history)."""
        return AccountRun(self, validate_account_name(account), operation)


def _take_flock(path: str) -> int | None:
    """A descriptor holding an exclusive flock(2) on `path` (created 0600), or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


class ServerLock:
    """One server-level operation at a time (e.g. one ip_reroute): like an account's lock, flock(2) on
    server/<name>.lock, released by the kernel when the process dies; a second run fails fast naming the holder."""

    def __init__(self, journal: Journal, name: str, operation: str) -> None:
        base = journal.record_path(name)[: -len(".json")]
        self.name = name
        self.operation = operation
        self.lock_path = base + ".lock"
        self.holder_path = base + ".holder.json"
        self._fd: int | None = None

    def __enter__(self) -> ServerLock:
        _ensure_dir(os.path.dirname(self.lock_path))
        self._fd = _take_flock(self.lock_path)
        if self._fd is None:
            raise LockedError(self.name, _read_json(self.holder_path) or {}, kind="server operation")
        holder = {"pid": os.getpid(), "hostname": socket.gethostname(), "operation": self.operation,
                  "started_at": utc_now()}  # fmt: skip
        write_json_atomic(self.holder_path, holder, durable=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            os.unlink(self.holder_path)
        except FileNotFoundError:
            pass
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class AccountRun:
    """One operation on one account under its lock. Entering takes the lock or raises LockedError at once.

    The lock is flock(2) on a file descriptor only this process holds (Python opens it non-inheritable, so tools
    run with subprocess do not keep it): when the process ends, even by SIGKILL, the kernel releases it and the
    next run takes it over. Such a run finds the dead run's holder.json still there and its history entry still
    "running"; it marks that entry "interrupted" and exposes the dead holder as `reclaimed`.
    """

    def __init__(self, journal: Journal, account: str, operation: str) -> None:
        self.journal = journal
        self.account = account
        self.operation = operation
        self.directory = journal.account_dir(account)
        self.holder_path = os.path.join(self.directory, "holder.json")
        self.state: dict[str, Any] = {}
        self.reclaimed: dict[str, Any] | None = None
        self._fd: int | None = None
        self._progress: dict[str, Any] = {}
        self._progress_written = 0.0

    def __enter__(self) -> AccountRun:
        _ensure_dir(self.directory)
        fd = _take_flock(os.path.join(self.directory, "lock"))
        if fd is None:
            raise LockedError(self.account, _read_json(self.holder_path) or {})
        self._fd = fd
        try:
            self._begin()
        except BaseException:
            self._release()
            raise
        return self

    def _begin(self) -> None:
        self.reclaimed = _read_json(self.holder_path)
        started_at = utc_now()
        holder = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "operation": self.operation,
            "started_at": started_at,
        }
        write_json_atomic(self.holder_path, holder)
        self.state = self.journal.read_state(self.account)
        history = self.state["history"]
        if history and history[-1]["outcome"] == "running":
            history[-1].update(outcome="interrupted", noticed_at=started_at)
        history.append({**holder, "outcome": "running", "phases": []})
        self.save()
        self._progress = {
            "account": self.account,
            "operation": self.operation,
            "pid": holder["pid"],
            "started_at": started_at,
            "status": "running",
            "phase": None,
            "bytes_done": None,
            "bytes_total": None,
            "tables_done": None,
            "tables_total": None,
        }
        self._write_progress()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            entry = self.state["history"][-1]
            entry.update(outcome="finished" if exc is None else "failed", finished_at=utc_now())
            if exc is not None:
                entry["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            self.save()
            self._progress["status"] = entry["outcome"]
            self._write_progress()
            os.unlink(self.holder_path)
        finally:
            self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def save(self) -> None:
        """Write `state` (which the caller may change freely between saves) atomically and durably."""
        if self._fd is None:
            raise JournalError(f"journal of account {self.account} written outside its lock")
        self.state["updated_at"] = utc_now()
        write_json_atomic(self.journal.state_path(self.account), self.state)

    @property
    def location(self) -> str | None:
        return self.state["location"]

    def set_location(self, location: str | None) -> None:
        self.state["location"] = location
        self.save()

    def phase_done(self, phase: str) -> bool:
        return phase in self.state["phases"]

    def finish_phase(self, phase: str, data: dict[str, Any] | None = None) -> None:
        """Record `phase` as finished, with JSON-serialisable `data` (timings, sizes), and save."""
        self.state["phases"][phase] = {"finished_at": utc_now(), "data": data or {}}
        self.state["history"][-1]["phases"].append(phase)
        self.save()

    def reset_phases(self) -> None:
        """Forget finished phases, e.g. when a new move starts after a finished one; history keeps them."""
        self.state["phases"] = {}
        self.save()

    def report(
        self,
        phase: str,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        tables_done: int | None = None,
        tables_total: int | None = None,
        force: bool = False,
    ) -> None:
        """Update the progress file; cheap to call per rsync progress line, it writes at most once a second
        unless the phase changes or `force` is set. Counters not given keep their value within a phase."""
        if phase != self._progress["phase"]:
            self._progress.update(bytes_done=None, bytes_total=None, tables_done=None, tables_total=None)
            force = True
        self._progress["phase"] = phase
        given = {
            "bytes_done": bytes_done,
            "bytes_total": bytes_total,
            "tables_done": tables_done,
            "tables_total": tables_total,
        }
        self._progress.update({key: value for key, value in given.items() if value is not None})
        if force or time.monotonic() - self._progress_written >= PROGRESS_INTERVAL:
            self._write_progress()

    def _write_progress(self) -> None:
        self._progress["updated_at"] = utc_now()
        # A lost progress file costs nothing after a crash, so it is not fsynced: pollers may read it every second.
        write_json_atomic(self.journal.progress_path(self.account), self._progress, durable=False)
        self._progress_written = time.monotonic()
