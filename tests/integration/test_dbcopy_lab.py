"""The dump copy method against the lab's real servers: the seeded accounts' databases copied client -> transit and
compared by the test's own row hashes (not table_checksums), users logging in on transit with their unchanged
passwords, grants, views, triggers, sequences; failing dump stages; table_checksums against a changed byte and a
swapped row; freeze/unfreeze; no password on any command line. Everything created on transit (and the dbtest*
databases and users on client) is dropped at the end; the client's seeded accounts are only read."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pymysql
import pytest
import yaml
from conftest import REPO

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy
from ansible_collections.hosting.migration.plugins.module_utils import mariadb as mariadb_lib
from ansible_collections.hosting.migration.plugins.module_utils import postgres as postgres_lib

pytestmark = pytest.mark.lab

SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text())
LIBS = {"mariadb": mariadb_lib, "postgresql": postgres_lib}
PASSWORDS = {
    (user["engine"], user["name"]): user["password"]
    for account in SEED["accounts"].values()
    for user in account["db_users"]
}
SEEDED = [("mariadb", "alice"), ("mariadb", "carol"), ("postgresql", "bob"), ("postgresql", "carol")]


@pytest.fixture
def endpoints(lab, admin):
    def pair(engine):
        lib = LIBS[engine]
        return tuple(lib.endpoint(lab.hosts[host].ipv4, admin[0], admin[1]) for host in ("client", "transit"))

    return pair


@pytest.fixture
def servers(endpoints):
    """Admin connections to a lab server (`with servers(engine, host, database) as conn`)."""

    class Connections:
        def __init__(self):
            self.opened = []

        def __call__(self, engine, host, database=None):
            endpoint = endpoints(engine)[0 if host == "client" else 1]
            conn = LIBS[engine].connect(endpoint, database)
            self.opened.append(conn)
            return conn

    connections = Connections()
    yield connections
    for conn in connections.opened:
        conn.close()


def execute(conn, statement, args=None):
    with conn.cursor() as cursor:
        cursor.execute(statement, args)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def transit(servers):
    """Records what a test puts on transit (and dbtest* things on client) and drops it at the end. Refuses to
    touch an account whose databases or users are on transit already (an account move of the lab in progress)."""

    class Cleaner:
        def __init__(self):
            self.accounts: list[tuple[str, str]] = []
            self.client: list[tuple[str, str]] = []

        def claim(self, engine, account):
            lib, conn = LIBS[engine], servers(engine, "transit")
            users = lib.account_users(conn, account) if engine == "mariadb" else lib.account_roles(conn, account)
            if (lib.account_databases(conn, account) or users) and (engine, account) not in self.accounts:
                pytest.skip(f"{account}'s {engine} databases or users are on transit already (an account move?)")
            self.accounts.append((engine, account))

        def drop(self, engine, host, account):
            lib, conn = LIBS[engine], servers(engine, host)
            for database in lib.account_databases(conn, account):
                if engine == "mariadb":
                    execute(conn, f"DROP DATABASE {mariadb_lib.quote_identifier(database)}")
                else:
                    execute(conn, f'DROP DATABASE "{database}" WITH (FORCE)')
            if engine == "mariadb":
                for user, user_host in lib.account_users(conn, account):
                    execute(conn, "DROP USER %s@%s", (user, user_host))
            else:
                for role in sorted(lib.account_roles(conn, account), reverse=True):
                    execute(conn, f'DROP ROLE "{role}"')

    cleaner = Cleaner()
    yield cleaner
    for engine, account in cleaner.accounts:
        cleaner.drop(engine, "transit", account)
    for engine, account in cleaner.client:
        cleaner.drop(engine, "client", account)


def run_copy(endpoints, engine, account, tmp_path, **options):
    source, destination = endpoints(engine)
    copier = dbcopy.database_copy(engine, "dump", source, destination, account, tmpdir=str(tmp_path), **options)
    reports = []
    try:
        result = copier.copy(lambda phase, **counters: reports.append((phase, counters)))
    finally:
        copier.cleanup()
    assert list(tmp_path.iterdir()) == [], "credential and schema files left behind"
    return result, reports


# ---- the test's own view of the data ----------------------------------------------------------------------------


def row_digest(engine, conn, database):
    """{table: (rows, sha256 of the sorted rows)} fetched through the driver, independent of table_checksums."""
    digests = {}
    if engine == "mariadb":
        tables = execute(
            conn,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
            (database,),
        )
        names = [(f"`{database}`.`{table}`", table) for (table,) in tables]
    else:
        if execute(conn, "SHOW server_encoding")[0][0] == "SQL_ASCII":
            conn.set_client_encoding("LATIN1")  # raw bytes through, read as Latin-1
        tables = execute(
            conn,
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
        names = [(f'ONLY "{schema}"."{table}"', f"{schema}.{table}") for schema, table in tables]
    for quoted, key in names:
        rows = sorted(repr(row) for row in execute(conn, f"SELECT * FROM {quoted}"))
        digests[key] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return digests


def same_rows(servers, engine, database):
    source = row_digest(engine, servers(engine, "client", database), database)
    destination = row_digest(engine, servers(engine, "transit", database), database)
    assert source and source == destination, f"{engine} {database}: rows differ"


# ---- copies of the seeded accounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "account"), SEEDED)
def test_copy_seeded_account_to_transit_twice(endpoints, servers, transit, tmp_path, engine, account):
    transit.claim(engine, account)
    lib = LIBS[engine]
    databases = lib.account_databases(servers(engine, "client"), account)
    for _attempt in range(2):  # a second copy over the first converges to the same
        result, reports = run_copy(endpoints, engine, account, tmp_path)
        assert sorted(result["databases"]) == databases
        assert reports and reports[-1][1]["tables_done"] == reports[-1][1]["tables_total"] > 0
        for database in databases:
            same_rows(servers, engine, database)
            assert lib.table_checksums(servers(engine, "client", database), database) == lib.table_checksums(
                servers(engine, "transit", database), database
            )
    users = [user for (e, user) in PASSWORDS if e == engine and (user == account or user.startswith(account + "_"))]
    assert sorted(u.split("@")[0] for u in result["users"]) == sorted(users)


def test_mariadb_users_grants_views_triggers_on_transit(endpoints, servers, transit, mariadb, tmp_path):
    for account in ("alice", "carol"):
        transit.claim("mariadb", account)
        run_copy(endpoints, "mariadb", account, tmp_path)
    # Unchanged passwords (carol's is the hostile one) log in on transit.
    client, copy = servers("mariadb", "client"), servers("mariadb", "transit")
    alice = mariadb("transit", "alice", PASSWORDS[("mariadb", "alice")], "alice_shop")
    count = "SELECT COUNT(*) FROM alice_shop.orders"
    assert execute(alice, count) == execute(client, count)
    reader = mariadb("transit", "alice_ro", PASSWORDS[("mariadb", "alice_ro")], "alice_shop")
    assert execute(reader, count) == execute(client, count)
    with pytest.raises(pymysql.err.MySQLError, match="denied"):
        execute(reader, "INSERT INTO audit_log VALUES (NOW(), 'not allowed')")
    carol = mariadb("transit", "carol", PASSWORDS[("mariadb", "carol")], "carol_blog")
    count = "SELECT COUNT(*) FROM carol_blog.posts"
    assert execute(carol, count) == execute(client, count)
    for name in ("SHOW GRANTS FOR 'alice_ro'@'%'", "SHOW CREATE USER 'carol'@'%'"):
        assert execute(client, name) == execute(copy, name)
    for statement in (
        "SELECT * FROM alice_shop.order_totals ORDER BY product_id",
        "SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT, DEFINER "
        "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'alice_shop'",
        "SELECT TABLE_NAME, AUTO_INCREMENT, TABLE_COLLATION, ROW_FORMAT FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA IN ('alice_shop', 'carol_blog') ORDER BY 1",
        "SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = 'alice_shop'",
        "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA IN ('alice_shop', 'carol_blog') ORDER BY 1, 2, 3",
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLUMN_DEFAULT, CHARACTER_SET_NAME "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ('alice_shop', 'carol_blog') ORDER BY 1, 2",
    ):
        assert execute(client, statement) == execute(copy, statement), statement


def test_postgres_roles_grants_views_sequences_on_transit(endpoints, servers, transit, postgresql, tmp_path):
    for account in ("bob", "carol"):
        transit.claim("postgresql", account)
        run_copy(endpoints, "postgresql", account, tmp_path)
    count = "SELECT count(*) FROM plants"
    bob = postgresql("transit", "bob", PASSWORDS[("postgresql", "bob")], "bob_app")
    assert execute(bob, count) == execute(servers("postgresql", "client", "bob_app"), count)
    reader = postgresql("transit", "bob_ro", PASSWORDS[("postgresql", "bob_ro")], "bob_app")
    assert execute(reader, count) == execute(bob, count)
    with pytest.raises(Exception, match="permission denied"):
        execute(reader, "INSERT INTO tags_nopk VALUES (1, 'not allowed')")
    carol = postgresql("transit", "carol", PASSWORDS[("postgresql", "carol")], "carol_legacy")
    count = "SELECT count(*) FROM notes"
    assert execute(carol, count) == execute(servers("postgresql", "client", "carol_legacy"), count)
    for database, statements in {
        "bob_app": (
            "SELECT last_value, is_called FROM plants_id_seq",
            "SELECT last_value, is_called FROM visits_id_seq",
            "SELECT relname, relkind, relacl::text, pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
            "SELECT pg_get_viewdef('recent_visits'::regclass)",
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
            "ORDER BY 1",
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        ),
        "carol_legacy": ("SELECT last_value, is_called FROM notes_id_seq",),
        "postgres": (
            "SELECT datname, pg_get_userbyid(datdba), datacl::text, pg_encoding_to_char(encoding), datcollate "
            "FROM pg_database WHERE datname IN ('bob_app', 'carol_legacy') ORDER BY 1",
            "SELECT rolname, rolcanlogin, rolinherit, rolconnlimit, rolpassword FROM pg_authid "
            "WHERE rolname IN ('bob', 'bob_ro', 'carol') ORDER BY 1",
        ),
    }.items():
        client, copy = servers("postgresql", "client", database), servers("postgresql", "transit", database)
        for statement in statements:
            assert execute(client, statement) == execute(copy, statement), statement


# ---- failures -----------------------------------------------------------------------------------------------------


def wrong_source_password(copier):
    """The tools' credential file for the source gets a wrong password (the module's own connections keep theirs)."""
    write = copier.write_credentials

    def broken():
        write()
        wrong = type(copier.source)(copier.source.host, copier.source.user, "wrong-password", copier.source.port)
        if copier.engine == "mariadb":
            dbcopy.write_private_file(copier.tmpdir, "mariadb-source.cnf", wrong.option_file())
        else:
            dbcopy.write_private_file(copier.tmpdir, "pg-source.pgpass", wrong.passfile())

    copier.write_credentials = broken


@pytest.mark.parametrize(
    ("engine", "account", "message"),
    [("mariadb", "alice", "Access denied"), ("postgresql", "bob", "password authentication failed")],
)
def test_failing_dump_stage_fails_the_copy(endpoints, transit, tmp_path, engine, account, message):
    transit.claim(engine, account)
    source, destination = endpoints(engine)
    copier = dbcopy.database_copy(engine, "dump", source, destination, account, tmpdir=str(tmp_path))
    wrong_source_password(copier)
    with pytest.raises(dbcopy.CopyError) as error:
        try:
            copier.copy(lambda phase, **counters: None)
        finally:
            copier.cleanup()
    assert "on the source exited with status" in str(error.value) and message in str(error.value)
    assert list(tmp_path.iterdir()) == []


BIG_ROWS = 1_500_000


def create_big_source(servers, engine):
    conn = servers(engine, "client")
    if engine == "mariadb":
        execute(conn, "DROP DATABASE IF EXISTS dbtest_big")
        execute(conn, "CREATE DATABASE dbtest_big")
        execute(conn, "CREATE TABLE dbtest_big.t (id INT PRIMARY KEY, payload VARCHAR(100) NOT NULL)")
        execute(conn, f"INSERT INTO dbtest_big.t SELECT seq, REPEAT('x', 60) FROM dbtest_big.seq_1_to_{BIG_ROWS}")
    else:
        execute(conn, "DROP DATABASE IF EXISTS dbtest_big WITH (FORCE)")
        execute(conn, "CREATE DATABASE dbtest_big")
        big = servers(engine, "client", "dbtest_big")
        execute(big, "CREATE TABLE t (id int PRIMARY KEY, payload text NOT NULL)")
        execute(big, f"INSERT INTO t SELECT g, repeat('x', 60) FROM generate_series(1, {BIG_ROWS}) g")


def in_background(action):
    outcome = {}

    def target():
        try:
            outcome["result"] = action()
        except Exception as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_killed_source_connection_fails_the_copy(endpoints, servers, transit, tmp_path, engine):
    transit.claim(engine, "dbtest")
    transit.client.append((engine, "dbtest"))
    create_big_source(servers, engine)
    thread, outcome = in_background(lambda: run_copy(endpoints, engine, "dbtest", tmp_path))
    watcher = servers(engine, "client")
    if engine == "mariadb":
        find = "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT QUOTE(%%dbtest_big%%'"
        kill = "KILL CONNECTION %s"
    else:
        find = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY %%TO STDOUT%%' AND datname = 'dbtest_big'"
        kill = "SELECT pg_terminate_backend(%s)"
    killed = False
    deadline = time.monotonic() + 60
    while thread.is_alive() and not killed and time.monotonic() < deadline:
        for (session,) in execute(watcher, find):
            execute(watcher, kill, (session,))
            killed = True
        time.sleep(0.02)
    thread.join()
    assert killed, "the copy ended before its source connection could be killed"
    assert isinstance(outcome.get("error"), dbcopy.CopyError), outcome
    assert "reading dbtest_big.t" in str(outcome["error"]) or "reading dbtest_big.public.t" in str(outcome["error"])
    assert "on the source exited with status" in str(outcome["error"])


# ---- checksums, freeze, names, secrets ----------------------------------------------------------------------------

TABLE = {
    "mariadb": "CREATE TABLE {db}.t (id INT PRIMARY KEY, name VARCHAR(20), note TEXT NULL)",
    "postgresql": "CREATE TABLE t (id int PRIMARY KEY, name text, note text)",
}


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_table_checksums_see_a_byte_and_a_swapped_row(servers, transit, engine):
    transit.claim(engine, "dbtest")
    lib, admin_conn = LIBS[engine], servers(engine, "transit")
    for database in ("dbtest_a", "dbtest_b"):
        execute(admin_conn, f"CREATE DATABASE {database}")
    conns = {}
    for database, order in (("dbtest_a", "ASC"), ("dbtest_b", "DESC")):
        conn = conns[database] = servers(engine, "transit", database)
        execute(conn, TABLE[engine].format(db=database))
        rows = [(i, f"name {i}", None if i % 3 else f"note\t{i}") for i in range(1, 51)]
        for row in sorted(rows, reverse=order == "DESC"):  # other insertion order, same rows
            execute(conn, "INSERT INTO t VALUES (%s, %s, %s)", row)

    def sums(database):
        return lib.table_checksums(conns[database], database)

    table = "t" if engine == "mariadb" else "public.t"
    assert sums("dbtest_a") == sums("dbtest_b") and sums("dbtest_a")[table][0] == 50
    execute(conns["dbtest_b"], "UPDATE t SET name = 'name 8' WHERE id = 7")  # one byte: '7' -> '8'
    assert sums("dbtest_a")[table] != sums("dbtest_b")[table]
    execute(conns["dbtest_b"], "UPDATE t SET name = 'name 7' WHERE id = 7")
    assert sums("dbtest_a") == sums("dbtest_b")
    execute(conns["dbtest_b"], "DELETE FROM t WHERE id = 7")  # a row swapped for another: same count
    execute(conns["dbtest_b"], "INSERT INTO t VALUES (107, 'name 7', NULL)")
    assert sums("dbtest_b")[table][0] == 50 and sums("dbtest_a")[table] != sums("dbtest_b")[table]
    execute(conns["dbtest_b"], "UPDATE t SET id = 7 WHERE id = 107")
    assert sums("dbtest_a") == sums("dbtest_b")
    execute(conns["dbtest_b"], "UPDATE t SET note = '' WHERE id = 1")  # NULL -> empty string
    assert sums("dbtest_a")[table] != sums("dbtest_b")[table]


def test_freeze_locks_out_and_unfreeze_restores(servers, transit, mariadb, postgresql):
    transit.client.extend([("mariadb", "dbtestf"), ("postgresql", "dbtestf")])
    my, pg = servers("mariadb", "client"), servers("postgresql", "client")
    execute(my, "CREATE USER 'dbtestf'@'%' IDENTIFIED BY 'f-pw', 'dbtestf_ro'@'%' IDENTIFIED BY 'f-pw'")
    execute(my, "ALTER USER 'dbtestf_ro'@'%' ACCOUNT LOCK")  # locked before: stays locked
    execute(pg, "CREATE ROLE dbtestf LOGIN PASSWORD 'f-pw'")
    execute(pg, "CREATE ROLE dbtestf_ro NOLOGIN")
    session_my = mariadb("client", "dbtestf", "f-pw")
    session_pg = postgresql("client", "dbtestf", "f-pw")

    frozen_my = mariadb_lib.freeze_users(my, "dbtestf")
    frozen_pg = postgres_lib.freeze_users(pg, "dbtestf")
    assert frozen_my == {"account": "dbtestf", "users": [{"user": "dbtestf", "host": "%"}], "sessions_ended": 1}
    assert frozen_pg == {"account": "dbtestf", "users": ["dbtestf"], "sessions_ended": 1}
    with pytest.raises(pymysql.err.OperationalError):
        execute(session_my, "SELECT 1")
    with pytest.raises(Exception, match="terminat|closed"):
        execute(session_pg, "SELECT 1")
    with pytest.raises(pymysql.err.OperationalError, match="locked"):
        mariadb("client", "dbtestf", "f-pw")
    with pytest.raises(Exception, match="not permitted to log in"):
        postgresql("client", "dbtestf", "f-pw")
    # Idempotent: a second freeze changes nothing and says so.
    assert mariadb_lib.freeze_users(my, "dbtestf")["users"] == []
    assert postgres_lib.freeze_users(pg, "dbtestf")["users"] == []

    assert mariadb_lib.unfreeze_users(my, frozen_my)["users"] == [{"user": "dbtestf", "host": "%"}]
    assert postgres_lib.unfreeze_users(pg, frozen_pg)["users"] == ["dbtestf"]
    assert mariadb_lib.unfreeze_users(my, frozen_my)["users"] == []
    assert execute(mariadb("client", "dbtestf", "f-pw"), "SELECT 1") == ((1,),)
    assert execute(postgresql("client", "dbtestf", "f-pw"), "SELECT 1") == [(1,)]
    with pytest.raises(pymysql.err.OperationalError, match="locked"):
        mariadb("client", "dbtestf_ro", "f-pw")


@pytest.mark.parametrize("engine", ["mariadb", "postgresql"])
def test_account_names_on_a_real_server(servers, transit, engine):
    transit.claim(engine, "dbtest")
    transit.accounts.append((engine, "dbtestx"))
    lib, conn = LIBS[engine], servers(engine, "transit")
    quote = mariadb_lib.quote_identifier if engine == "mariadb" else (lambda name: '"' + name + '"')
    for database in ("dbtest_ok", "dbtestx_other"):
        execute(conn, f"CREATE DATABASE {quote(database)}")
    assert lib.account_databases(conn, "dbtest") == ["dbtest_ok"]
    assert lib.account_databases(conn, "dbtes") == []  # '_' is not a wildcard
    execute(conn, f"CREATE DATABASE {quote('dbtest_bad-name')}")
    try:
        with pytest.raises(ValueError, match="dbtest_bad-name"):
            lib.account_databases(conn, "dbtest")
    finally:
        execute(conn, f"DROP DATABASE {quote('dbtest_bad-name')}")


def test_no_password_on_a_command_line_during_a_copy(endpoints, servers, transit, admin, tmp_path):
    for engine in ("mariadb", "postgresql"):
        transit.claim(engine, "dbtest")
        transit.client.append((engine, "dbtest"))
        create_big_source(servers, engine)
    secret = admin[1].encode()
    seen_tools, leaks = set(), []
    done = threading.Event()

    def sample():
        while not done.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    argv = (proc / "cmdline").read_bytes().split(b"\0")
                    environ = (proc / "environ").read_bytes()
                except OSError:
                    continue
                tool = os.path.basename(argv[0].decode(errors="replace"))
                if tool in ("mariadb", "mariadb-dump", "psql", "pg_dump", "pg_restore"):
                    seen_tools.add(tool)
                    if any(secret in argument for argument in argv) or secret in environ:
                        leaks.append(tool)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for engine in ("mariadb", "postgresql"):
            run_copy(endpoints, engine, "dbtest", tmp_path)
    finally:
        done.set()
        sampler.join()
    assert {"mariadb", "psql", "pg_restore"} <= seen_tools, seen_tools
    assert leaks == []
