# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How an account's databases get from one server to another: the method interface account_move calls, and what
every method and engine share (names an account owns, private credential files, checked pipelines, the parallel
table pool).

    copier = database_copy("mariadb", "dump", source, destination, "alice", parallel=2, tmpdir=module.tmpdir)
    copier.plan()                 # read-only: databases, users, sizes, estimated seconds (check mode)
    copier.precopy(progress)      # live phase (the dump method has nothing to do there)
    try:
        result = copier.copy(progress)   # frozen phase: the destination becomes identical to the source
    finally:
        copier.cleanup()

The engine modules (mariadb, postgres) hold each engine's knowledge and subclass DumpCopy here; the factory imports
them when called, so they can import this module without a cycle.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

ENGINES = ("mariadb", "postgresql")
METHODS = ("dump", "live")
# Engines with a live method (replication from the pre-copy on); the others use dump whatever is asked.
LIVE_ENGINES = ("postgresql", "mariadb")
# Those whose live method `auto` chooses.
AUTO_LIVE_ENGINES = ("postgresql", "mariadb")
# What follows `<account>_` in a database, user or role name the collection will touch.
_SUFFIX_RE = re.compile(r"[A-Za-z0-9_]{1,63}")
# Stderr kept per failed stage in an error message: the tools put the reason in their last lines.
_STDERR_TAIL = 1500
# Exit status of a stage killed by SIGPIPE: it lost its reader, the reader's failure is the news.
_SIGPIPE_STATUSES = (-13, 141)


class Progress(Protocol):
    """account_move's progress callback; only these counters are reported."""

    def __call__(
        self,
        phase: str,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        tables_done: int | None = None,
        tables_total: int | None = None,
    ) -> None: ...


class DatabaseCopy(Protocol):
    engine: str  # "mariadb" | "postgresql"
    method: str  # "dump" or "live"

    def plan(self) -> dict: ...

    def precopy(self, progress: Progress) -> dict: ...

    def copy(self, progress: Progress) -> dict: ...

    def cleanup(self) -> None: ...


def endpoint_options() -> dict[str, Any]:
    """Argument spec of a database admin endpoint (the modules' `mariadb` / `postgresql` dicts)."""
    return {
        "host": {"type": "str", "required": True},
        "port": {"type": "int"},
        "user": {"type": "str", "required": True},
        "password": {"type": "str", "required": True, "no_log": True},
    }


@dataclass(frozen=True)
class Endpoint:
    """A database server as the module's options give it. The password never shows in repr and reaches the tools
    only through a 0600 file in tmpdir, which each engine's subclass writes (mariadb.Endpoint, postgres.Endpoint)."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int = 0
    ENGINE: ClassVar[str] = ""
    DEFAULT_PORT: ClassVar[int] = 0

    @classmethod
    def from_options(cls, host: str, user: str, password: str, port: int | None = None) -> Endpoint:
        """From module options: port None means the engine's default."""
        for name, value in (("host", host), ("user", user)):
            if not value or any(c in value for c in "\0\n\r"):
                raise ValueError(f"{cls.ENGINE} {name} must be a non-empty single line")
        return cls(host=host, user=user, password=password, port=port or cls.DEFAULT_PORT)


class Stage(NamedTuple):
    """One process of a pipeline: `name` says what it is in error messages (never a secret), `argv` runs it."""

    name: str
    argv: list[str]


class CommandError(RuntimeError):
    """A pipeline stage failed; the message names every failed stage with its exit status and stderr."""


# run_command(stages): run the stages with each stage's stdout connected to the next one's stdin (the first reads
# nothing, the last one's output is only kept for error messages), wait for all of them and raise CommandError if
# any exited non-zero. No stage needs a secret in its argv or environment: credentials are in files in tmpdir.
RunCommand = Callable[[Sequence[Stage]], None]


class CopyError(RuntimeError):
    """The copy failed; the message says what failed where."""


def run_pipeline(stages: Sequence[Stage]) -> None:
    """The default RunCommand, on subprocess: data flows from stage to stage through OS pipes (nothing in memory,
    nothing on disk), and every stage's exit status is checked, so a dump that dies behind a loader that happily
    reads its truncated output still fails the copy."""
    processes: list[subprocess.Popen] = []
    errors = [tempfile.TemporaryFile() for _stage in stages]
    try:
        previous = subprocess.DEVNULL
        for index, stage in enumerate(stages):
            last = index == len(stages) - 1
            process = subprocess.Popen(
                stage.argv,
                stdin=previous,
                stdout=errors[index] if last else subprocess.PIPE,
                stderr=errors[index],
            )
            if previous is not subprocess.DEVNULL:
                # Only the next stage may hold the read end: the writer gets SIGPIPE when its reader dies.
                previous.close()
            previous = process.stdout
            processes.append(process)
        statuses = [process.wait() for process in processes]
        failed = [index for index, status in enumerate(statuses) if status != 0]
        if failed:
            raise CommandError("; ".join(_stage_failure(stages[i], statuses[i], errors[i]) for i in failed))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for handle in errors:
            handle.close()


def _stage_failure(stage: Stage, status: int, stderr: Any) -> str:
    stderr.seek(0)
    text = stderr.read().decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
    if status in _SIGPIPE_STATUSES and not text:
        return f"{stage.name} stopped: its reader failed"
    return f"{stage.name} exited with status {status}: {text or '(no message)'}"


def owned_name(name: object, account: str, what: str, *, bare: bool) -> str:
    """Return `name` if the account owns it: `<account>_<suffix>` (letters, digits, underscores), or the account name
    itself where `bare` (users and roles). Anything else raises ValueError: names read back from a server are
    checked again before they become identifiers or command arguments."""
    validate_account_name(account)
    if isinstance(name, str):
        if bare and name == account:
            return name
        prefix = account + "_"
        if name.startswith(prefix) and _SUFFIX_RE.fullmatch(name[len(prefix) :]):
            return name
    raise ValueError(
        f"{what} {name!r} is not one of account {account!r}'s: expected {account}_ followed by letters, digits or "
        "underscores" + (f", or {account} itself" if bare else "")
    )


def write_private_file(directory: str, name: str, text: str) -> str:
    """Create `directory/name` with mode 0600 from the start (credentials never sit in a readable file) and return
    its path. An existing file is replaced."""
    path = os.path.join(directory, name)
    if os.path.lexists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


class Job(NamedTuple):
    """A unit of the parallel pool: `name` for messages, `size` in bytes (biggest run first), `work()` does it."""

    name: str
    size: int
    work: Callable[[], None]


class DumpCopy:
    """The dump method, shared by both engines: while the account is frozen, users first, then each database is
    recreated on the destination, its tables streamed in parallel, then finished (keys, triggers, sequences).

    An engine subclass provides the catalog reads and the per-database steps (the hooks below). Connections are
    opened per call and closed again; credential files live in `tmpdir` between copy() and cleanup()."""

    engine = ""
    method = "dump"
    # MariaDB grants on tables need the tables; PostgreSQL owners must exist before their objects.
    USERS_AFTER_DATABASES = False
    # Seconds per GB for plan()'s estimate: each method sets what bench/account_move_db.py measured; this default is
    # the provider's documented rate.
    SECONDS_PER_GB = 60.0

    def __init__(
        self,
        source: Any,
        destination: Any,
        account: str,
        *,
        parallel: int,
        tmpdir: str,
        run_command: RunCommand,
    ) -> None:
        self.source = source
        self.destination = destination
        self.account = validate_account_name(account)
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.parallel = parallel
        self.tmpdir = tmpdir
        self.run_command = run_command
        self._files: list[str] = []
        self._local = threading.local()
        self._worker_connections: list[Any] = []
        self._guard = threading.Lock()

    # ---- hooks of an engine ------------------------------------------------------------------------------------

    def connect(self, endpoint: Any, database: str | None = None) -> Any:
        raise NotImplementedError

    def databases(self, conn: Any) -> list[str]:
        raise NotImplementedError

    def users(self, conn: Any) -> list[str]:
        raise NotImplementedError

    def database_sizes(self, conn: Any, databases: list[str]) -> dict[str, int]:
        raise NotImplementedError

    def check_destination(self, conn: Any) -> list[str]:
        """Reasons the destination cannot take a dump copy (empty if it can)."""
        return []

    def write_credentials(self) -> None:
        """Write the tools' credential files into tmpdir (via self.private_file)."""
        raise NotImplementedError

    def copy_users(self, source: Any, destination: Any) -> list[str]:
        raise NotImplementedError

    def prepare_database(self, database: str, source: Any, destination: Any) -> None:
        """Drop and recreate the database on the destination with its schema, ready to be loaded fast."""
        raise NotImplementedError

    def table_jobs(self, database: str, source: Any) -> list[Job]:
        """One job per table (an empty table's job does nothing)."""
        raise NotImplementedError

    def finish_database(self, database: str, source: Any, destination: Any) -> None:
        """Everything deferred until the data is in: keys, constraints, triggers, sequences, statistics."""
        raise NotImplementedError

    def worker_connection_for(self, database: str) -> Any:
        """A new destination connection to `database`, set up for the jobs of the pool (see worker_connection)."""
        raise NotImplementedError

    # ---- the interface -----------------------------------------------------------------------------------------

    def plan(self) -> dict:
        with self.connected("source") as source, self.connected("destination") as destination:
            databases = self.databases(source)
            sizes = self.database_sizes(source, databases)
            existing = set(self.databases(destination))
            existing_users = set(self.users(destination))
            users = self.users(source)
            problems = self.check_destination(destination)
        total = sum(sizes.values())
        return {
            "engine": self.engine,
            "method": self.method,
            "databases": {name: {"bytes": sizes[name], "replaces": name in existing} for name in databases},
            "users": users,
            "replaces_users": sorted(existing_users & set(users)),
            "bytes": total,
            "estimated_seconds": round(1 + total / 2**30 * self.SECONDS_PER_GB, 1),
            "problems": problems,
        }

    def precopy(self, progress: Progress) -> dict:
        """The dump method copies everything while frozen; a replication method will start here."""
        return {}

    def copy(self, progress: Progress) -> dict:
        started = time.monotonic()
        self.write_credentials()
        with self.connected("source") as source, self.connected("destination") as destination:
            problems = self.check_destination(destination)
            if problems:
                raise CopyError(f"{self.engine} on the destination ({self.destination.host}): " + "; ".join(problems))
            if not self.USERS_AFTER_DATABASES:
                users = self._step("copying users", lambda: self.copy_users(source, destination))
            databases, sizes, counters = self._inventory(source)
            copied = {}
            for database in databases:
                copied[database] = self._copy_database(
                    database, sizes[database], source, destination, counters, progress
                )
            if self.USERS_AFTER_DATABASES:
                users = self._step("copying users", lambda: self.copy_users(source, destination))
        return self._copied(started, counters, copied, users)

    def _inventory(self, source: Any) -> tuple[list[str], dict[str, int], dict[str, int]]:
        """The account's databases on the source, their sizes, and the progress counters of their copy."""
        databases = self.databases(source)
        sizes = self.database_sizes(source, databases)
        counters = {"bytes_done": 0, "bytes_total": sum(sizes.values()), "tables_done": 0, "tables_total": 0}
        return databases, sizes, counters

    def _copied(self, started: float, counters: dict, copied: dict, users: list) -> dict:
        """What copy() returns, whatever the method."""
        return {
            "engine": self.engine,
            "method": self.method,
            "seconds": round(time.monotonic() - started, 3),
            "bytes": counters["bytes_total"],
            "databases": copied,
            "users": users,
        }

    def cleanup(self) -> None:
        self._close_worker_connections()
        for path in self._files:
            if os.path.lexists(path):
                os.unlink(path)
        self._files.clear()

    # ---- shared machinery --------------------------------------------------------------------------------------

    def private_file(self, name: str, text: str) -> str:
        path = write_private_file(self.tmpdir, name, text)
        self._files.append(path)
        return path

    def run(self, stages: Sequence[Stage]) -> None:
        self.run_command(stages)

    def worker_connection(self, database: str) -> Any:
        """The calling pool thread's own destination connection to `database` (drivers are not thread-safe)."""
        cached = getattr(self._local, "connections", None)
        if cached is None:
            cached = self._local.connections = {}
        if database not in cached:
            conn = self.worker_connection_for(database)
            cached[database] = conn
            with self._guard:
                self._worker_connections.append(conn)
        return cached[database]

    def run_parallel(self, jobs: list[Job], done: Callable[[Job], None] | None = None) -> None:
        """Run the jobs on `parallel` threads, biggest first; the first failure cancels what has not started and is
        raised once the running jobs have ended."""
        if not jobs:
            return
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix=f"{self.engine}-copy") as pool:
            futures = {pool.submit(job.work): job for job in sorted(jobs, key=lambda j: -j.size)}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    error = future.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        wait(pending)
                        raise CopyError(f"{self.engine}: {futures[future].name} failed: {error}") from error
                    if done is not None:
                        with self._guard:
                            done(futures[future])

    def _copy_database(
        self, database: str, size: int, source: Any, destination: Any, counters: dict, progress: Progress
    ) -> dict:
        started = time.monotonic()
        bytes_before = counters["bytes_done"]
        self._step(f"preparing database {database}", lambda: self.prepare_database(database, source, destination))
        jobs = self._step(f"listing the tables of {database}", lambda: self.table_jobs(database, source))
        counters["tables_total"] += len(jobs)
        progress("databases", **counters)

        def done(job: Job) -> None:
            counters["tables_done"] += 1
            counters["bytes_done"] += job.size
            progress("databases", **counters)

        self.run_parallel(jobs, done)
        self._step(f"finishing database {database}", lambda: self.finish_database(database, source, destination))
        self._close_worker_connections()
        # Table sizes are estimates of the catalog: the database counts as exactly its size once done.
        counters["bytes_done"] = bytes_before + size
        progress("databases", **counters)
        return {"seconds": round(time.monotonic() - started, 3), "bytes": size, "tables": len(jobs)}

    def _step(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except CopyError:
            raise
        except Exception as error:
            raise CopyError(f"{self.engine}: {what} failed: {error}") from error

    def _close_worker_connections(self) -> None:
        with self._guard:
            for conn in self._worker_connections:
                try:
                    conn.close()
                except Exception:  # closing is best effort: the data is already committed or the copy failed
                    pass
            self._worker_connections.clear()
        self._local = threading.local()

    @contextmanager
    def connected(self, side: str, database: str | None = None) -> Iterator[Any]:
        """A connection to the source or destination server (to `database`), closed at the end of the block."""
        endpoint = self.source if side == "source" else self.destination
        try:
            conn = self.connect(endpoint, database)
        except Exception as error:
            raise CopyError(
                f"cannot connect to {self.engine} on the {side} ({endpoint.host}:{endpoint.port} as {endpoint.user}): "
                f"{error}"
            ) from error
        try:
            yield conn
        finally:
            conn.close()


def database_copy(
    engine: str,
    method: str,
    source: Any,
    destination: Any,
    account: str,
    *,
    parallel: int = 2,
    tmpdir: str,
    run_command: RunCommand = run_pipeline,
) -> DatabaseCopy:
    """The copier of `method` for `engine`. source/destination are that engine's Endpoint (mariadb.endpoint(),
    postgres.endpoint()); tmpdir is a private directory (module.tmpdir) for credential files."""
    if method not in METHODS:
        raise ValueError(f"unknown database copy method {method!r}; known: {', '.join(METHODS)}")
    if engine not in LIVE_ENGINES and method == "live":
        raise ValueError(f"{engine} has no live method")
    if engine == "mariadb" and method == "live":
        from ansible_collections.hosting.migration.plugins.module_utils.mariadb_live import (
            MariaDBLiveCopy as implementation,
        )
    elif engine == "mariadb":
        from ansible_collections.hosting.migration.plugins.module_utils.mariadb import MariaDBDumpCopy as implementation
    elif engine == "postgresql" and method == "live":
        from ansible_collections.hosting.migration.plugins.module_utils.pg_live import (
            PostgresLiveCopy as implementation,
        )
    elif engine == "postgresql":
        from ansible_collections.hosting.migration.plugins.module_utils.postgres import (
            PostgresDumpCopy as implementation,
        )
    else:
        raise ValueError(f"unknown database engine {engine!r}; known: {', '.join(ENGINES)}")
    return implementation(source, destination, account, parallel=parallel, tmpdir=tmpdir, run_command=run_command)
