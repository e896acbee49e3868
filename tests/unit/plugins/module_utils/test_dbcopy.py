"""dbcopy: checked pipelines, account-owned names, private files, the factory and the dump orchestration (with a fake
engine: no server involved)."""

from __future__ import annotations

import os
import stat
import threading
from typing import NamedTuple

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import (
    CommandError,
    CopyError,
    DumpCopy,
    Job,
    Stage,
    owned_name,
    run_pipeline,
    write_private_file,
)

# ---- run_pipeline -----------------------------------------------------------------------------------------------


def test_pipeline_passes_data_through(tmp_path):
    out = tmp_path / "out"
    run_pipeline([Stage("producer", ["printf", "a\\nb\\n"]), Stage("consumer", ["sh", "-c", f"cat > {out}"])])
    assert out.read_text() == "a\nb\n"


def test_failed_producer_behind_a_succeeding_consumer_fails_the_pipeline():
    # The classic bug of dump modules: the loader reads a truncated dump and exits 0.
    with pytest.raises(CommandError) as error:
        run_pipeline(
            [
                Stage("dump on the source", ["sh", "-c", "echo partial; echo 'Access denied' >&2; exit 3"]),
                Stage("loader on the destination", ["cat"]),
            ]
        )
    message = str(error.value)
    assert "dump on the source exited with status 3" in message
    assert "Access denied" in message
    assert "loader" not in message


def test_failed_consumer_names_it_and_the_producer_that_lost_its_reader():
    with pytest.raises(CommandError) as error:
        run_pipeline(
            [
                Stage("endless producer", ["yes"]),
                Stage("consumer", ["sh", "-c", "head -c 10 > /dev/null; echo 'disk full' >&2; exit 2"]),
            ]
        )
    message = str(error.value)
    assert "consumer exited with status 2: disk full" in message
    assert "endless producer stopped: its reader failed" in message


def test_single_stage_failure_keeps_the_end_of_stderr():
    with pytest.raises(CommandError, match=r"(?s)tool exited with status 1: .*last line$"):
        run_pipeline(
            [
                Stage(
                    "tool", ["sh", "-c", "for i in $(seq 2000); do echo noise $i >&2; done; echo last line >&2; exit 1"]
                )
            ]
        )


def test_pipeline_leaves_no_process_behind():
    before = threading.active_count()
    with pytest.raises(CommandError):
        run_pipeline([Stage("a", ["sh", "-c", "exit 1"]), Stage("b", ["cat"])])
    assert threading.active_count() == before


# ---- names and files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice_shop", "alice_Shop_2", "alice_x"])
def test_owned_names(name):
    assert owned_name(name, "alice", "database", bare=False) == name


@pytest.mark.parametrize(
    "name",
    [
        "alice",  # bare name: only for users and roles
        "alicex_shop",
        "ali_shop",
        "bob_app",
        "alice_",
        "alice_shop;DROP DATABASE x",
        "alice_a';DROP DATABASE x;--",
        "alice_../etc",
        "alice_shop\n",
        "alice_caf\u00e9",
        "-rf",
        "",
        None,
        42,
    ],
)
def test_names_the_account_does_not_own_are_refused(name):
    with pytest.raises(ValueError):
        owned_name(name, "alice", "database", bare=False)


def test_bare_account_name_is_a_user_of_its_own():
    assert owned_name("alice", "alice", "user", bare=True) == "alice"


@pytest.mark.parametrize("account", ["a';DROP DATABASE x;--", "../etc", "-rf", "Alice"])
def test_hostile_account_is_refused(account):
    with pytest.raises(ValueError):
        owned_name(f"{account}_x", account, "database", bare=False)


def test_private_file_is_0600_and_replaced(tmp_path):
    path = write_private_file(str(tmp_path), "secret.cnf", "one")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o644)
    write_private_file(str(tmp_path), "secret.cnf", "two")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read() == "two"


# ---- factory ----------------------------------------------------------------------------------------------------


def test_factory_refuses_unknown_engine_method_and_hostile_account(tmp_path):
    with pytest.raises(ValueError, match="engine"):
        dbcopy.database_copy("oracle", "dump", None, None, "alice", tmpdir=str(tmp_path))
    with pytest.raises(ValueError, match="method"):
        dbcopy.database_copy("mariadb", "replication", None, None, "alice", tmpdir=str(tmp_path))
    with pytest.raises(ValueError):
        dbcopy.database_copy("mariadb", "dump", None, None, "a';DROP DATABASE x;--", tmpdir=str(tmp_path))


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_factory_builds_the_engine_copier(tmp_path, engine):
    copier = dbcopy.database_copy(engine, "dump", None, None, "alice", parallel=3, tmpdir=str(tmp_path))
    assert (copier.engine, copier.method, copier.parallel) == (engine, "dump", 3)
    assert copier.precopy(lambda phase, **counters: None) == {}


# ---- the dump orchestration, with a fake engine -----------------------------------------------------------------


class Endpoint(NamedTuple):
    side: str
    host: str = "10.0.0.9"
    port: int = 3306
    user: str = "admin"


SOURCE, DESTINATION = Endpoint("src"), Endpoint("dst")


class FakeConnection:
    def __init__(self, endpoint):
        self.side = endpoint.side
        self.closed = False

    def close(self):
        self.closed = True


class FakeEngine(DumpCopy):
    """Records the hooks called; `fail` names a table whose job raises."""

    engine = "fake"
    SECONDS_PER_GB = 10.0

    def __init__(self, *args, tables=None, fail=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        self.connections = []
        self.tables = tables or {"alice_shop": {"orders": 300, "products": 100}, "alice_blog": {"posts": 50}}
        self.fail = fail

    def connect(self, endpoint, database=None):
        conn = FakeConnection(endpoint)
        self.connections.append(conn)
        return conn

    def databases(self, conn):
        return sorted(self.tables) if conn.side == "src" else ["alice_blog"]

    def users(self, conn):
        return ["alice", "alice_ro"] if conn.side == "src" else ["alice"]

    def database_sizes(self, conn, databases):
        return {db: sum(self.tables[db].values()) for db in databases}

    def write_credentials(self):
        self.credentials = self.private_file("fake.cnf", "password=secret\n")

    def copy_users(self, source, destination):
        self.calls.append("users")
        return ["alice", "alice_ro"]

    def prepare_database(self, database, source, destination):
        self.calls.append(f"prepare {database}")

    def table_jobs(self, database, source):
        return [Job(f"{database}.{t}", size, self._work(database, t)) for t, size in self.tables[database].items()]

    def _work(self, database, table):
        def work():
            if table == self.fail:
                raise CommandError("psql reading it exited with status 1: boom")
            with self._guard:
                self.calls.append(f"table {database}.{table}")

        return work

    def finish_database(self, database, source, destination):
        self.calls.append(f"finish {database}")


@pytest.fixture
def fake(tmp_path):
    return FakeEngine(SOURCE, DESTINATION, "alice", parallel=2, tmpdir=str(tmp_path), run_command=run_pipeline)


def test_plan_reads_and_estimates_without_writing(fake, tmp_path):
    plan = fake.plan()
    assert plan["bytes"] == 450
    assert plan["databases"] == {
        "alice_blog": {"bytes": 50, "replaces": True},
        "alice_shop": {"bytes": 400, "replaces": False},
    }
    assert plan["users"] == ["alice", "alice_ro"] and plan["replaces_users"] == ["alice"]
    assert plan["estimated_seconds"] > 0
    assert fake.calls == [] and list(tmp_path.iterdir()) == []
    assert all(conn.closed for conn in fake.connections)


def test_copy_order_progress_and_result(fake):
    reports = []
    result = fake.copy(lambda phase, **counters: reports.append((phase, counters)))
    assert fake.calls[0] == "users"
    assert fake.calls.index("prepare alice_blog") < fake.calls.index("table alice_blog.posts")
    assert fake.calls.index("table alice_blog.posts") < fake.calls.index("finish alice_blog")
    assert fake.calls.index("finish alice_blog") < fake.calls.index("prepare alice_shop")
    assert {c for c in fake.calls if c.startswith("table")} == {
        "table alice_blog.posts",
        "table alice_shop.orders",
        "table alice_shop.products",
    }
    assert set(result["databases"]) == {"alice_blog", "alice_shop"}
    assert result["databases"]["alice_shop"]["tables"] == 2 and result["databases"]["alice_shop"]["bytes"] == 400
    assert result["users"] == ["alice", "alice_ro"] and result["bytes"] == 450
    assert all(phase == "databases" for phase, _counters in reports)
    assert reports[-1][1] == {"bytes_done": 450, "bytes_total": 450, "tables_done": 3, "tables_total": 3}
    assert all(conn.closed for conn in fake.connections)


def test_users_after_databases_when_the_engine_says_so(fake):
    fake.USERS_AFTER_DATABASES = True
    fake.copy(lambda phase, **counters: None)
    assert fake.calls[-1] == "users"


def test_failing_table_fails_the_copy_and_names_it(tmp_path):
    tables = {"alice_shop": {f"t{i}": 100 - i for i in range(20)}}
    copier = FakeEngine(SOURCE, DESTINATION, "alice", parallel=1, tmpdir=str(tmp_path), run_command=run_pipeline,
                        tables=tables, fail="t0")  # fmt: skip
    with pytest.raises(CopyError, match=r"fake: alice_shop\.t0 failed: psql reading it exited with status 1: boom"):
        copier.copy(lambda phase, **counters: None)
    # The biggest table runs first and fails: nothing after it starts, nothing is finished.
    assert not any(call.startswith(("table", "finish")) for call in copier.calls)
    copier.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_refused_destination_stops_before_any_change(fake):
    fake.check_destination = lambda conn: ["local_infile is OFF"]
    with pytest.raises(CopyError, match="local_infile is OFF"):
        fake.copy(lambda phase, **counters: None)
    assert fake.calls == []


def test_connection_failure_names_the_side(tmp_path):
    class Unreachable(FakeEngine):
        def connect(self, endpoint, database=None):
            raise OSError("connection refused")

    copier = Unreachable(SOURCE, DESTINATION, "alice", parallel=2, tmpdir=str(tmp_path), run_command=run_pipeline)
    with pytest.raises(CopyError, match=r"cannot connect to fake on the source \(10\.0\.0\.9:3306 as admin\)"):
        copier.plan()


def test_cleanup_removes_credential_files(fake, tmp_path):
    fake.copy(lambda phase, **counters: None)
    assert (tmp_path / "fake.cnf").exists()
    fake.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_parallel_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="parallel"):
        FakeEngine(SOURCE, DESTINATION, "alice", parallel=0, tmpdir=str(tmp_path), run_command=run_pipeline)
