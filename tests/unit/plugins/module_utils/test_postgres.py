"""postgres module_utils with the driver mocked at its boundary (a cursor): identifiers quoted with
psycopg2.sql.Identifier, values bound, names the account does not own refused, credentials only in 0600 files."""

from __future__ import annotations

import os
import stat

import pytest
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from ansible_collections.hosting.migration.plugins.module_utils import postgres
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import run_pipeline

HOSTILE_PASSWORD = "c'a\"r$o;l() \\pw: #x"


def render(statement):
    """Text of a psycopg2.sql composition as the server would get it (the quoting is Identifier's rule)."""
    if isinstance(statement, str):
        return statement
    if isinstance(statement, sql.Composed):
        return "".join(render(part) for part in statement.seq)
    if isinstance(statement, sql.Identifier):
        return ".".join('"' + name.replace('"', '""') + '"' for name in statement.strings)
    if isinstance(statement, sql.Placeholder):
        return "%s"
    return statement.string


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.rows = []
        self.description = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, statement, args=None):
        text = render(statement)
        self.conn.executed.append((text, args))
        self.rows = self.conn.answer(text, args)
        self.description = [("column",)] if self.rows else None

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0]


class FakeConnection:
    """Answers each statement with the rows of the first (substring, rows) pair it contains."""

    autocommit = True

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.executed = []

    def cursor(self):
        return FakeCursor(self)

    def answer(self, statement, args):
        for key, rows in self.answers:
            if key in statement:
                return rows
        return []

    def statements(self, containing=""):
        return [(s, a) for s, a in self.executed if containing in s]


def test_endpoint_never_shows_the_password():
    endpoint = postgres.endpoint("10.0.0.1", "admin", HOSTILE_PASSWORD)
    assert HOSTILE_PASSWORD not in repr(endpoint) and endpoint.port == 5432


def test_passfile_escapes_separators():
    line = postgres.endpoint("fd77::11", "ad:min", HOSTILE_PASSWORD, 5433).passfile()
    assert line == "fd77\\:\\:11:5433:*:ad\\:min:c'a\"r$o;l() \\\\pw\\: #x\n"
    with pytest.raises(ValueError, match="line break"):
        postgres.endpoint("h", "u", "pass\nword").passfile()


def test_conninfo_names_the_passfile_and_parses_back():
    endpoint = postgres.endpoint("10.0.0.1", "ad'min", HOSTILE_PASSWORD)
    conninfo = endpoint.conninfo("bob_app", "/tmp/x y/pg.pass", {"synchronous_commit": "off"})
    parsed = parse_dsn(conninfo)
    assert parsed["user"] == "ad'min" and parsed["dbname"] == "bob_app" and parsed["passfile"] == "/tmp/x y/pg.pass"
    assert "-c synchronous_commit=off" in parsed["options"] and "-c TimeZone=UTC" in parsed["options"]
    assert HOSTILE_PASSWORD not in conninfo and "password" not in parsed


def test_account_databases_bind_an_escaped_prefix_and_check_names_again():
    conn = FakeConnection([("pg_database", [("bob_app",), ("bob_blog",)])])
    assert postgres.account_databases(conn, "bob") == ["bob_app", "bob_blog"]
    assert conn.executed[0][1] == ("bob\\_%",) and "bob" not in conn.executed[0][0]
    hostile = FakeConnection([("pg_database", [('bob_x"; DROP DATABASE y; --',)])])
    with pytest.raises(ValueError, match="bob_x"):
        postgres.account_databases(hostile, "bob")


@pytest.mark.parametrize("account", ["a';DROP DATABASE x;--", "../etc", "-rf"])
def test_hostile_account_refused_before_any_query(account):
    conn = FakeConnection()
    for action in (postgres.account_databases, postgres.account_roles, postgres.freeze_users):
        with pytest.raises(ValueError):
            action(conn, account)
    assert conn.executed == []


def test_import_roles_quotes_names_and_binds_the_hash():
    conn = FakeConnection([("FROM pg_roles WHERE rolname = ANY", []), ("SELECT rolname FROM pg_roles", [("bob",)])])
    roles = [
        {
            "name": "bob",
            "attributes": dict.fromkeys(postgres._ROLE_FLAGS, False) | {"LOGIN": True, "INHERIT": True},
            "connection_limit": -1,
            "valid_until": None,
            "password": "md5abc",
            "member_of": [],
            "settings": ['search_path="$user", public, "My Schema"', "work_mem=8MB"],
        }
    ]
    assert postgres.import_roles(conn, roles, "bob") == ["bob"]
    assert conn.statements("CREATE ROLE") == [('CREATE ROLE "bob"', None)]
    ((alter, args),) = conn.statements('ALTER ROLE "bob" WITH')
    assert "NOSUPERUSER INHERIT" in alter and " LOGIN " in alter and "VALID UNTIL" not in alter
    assert alter.endswith("CONNECTION LIMIT %s PASSWORD %s") and args == (-1, "md5abc")
    assert conn.statements("SET \"search_path\"") == [('ALTER ROLE "bob" SET "search_path" TO %s, %s, %s',
                                                       ["$user", "public", "My Schema"])]  # fmt: skip
    assert conn.statements('SET "work_mem"') == [('ALTER ROLE "bob" SET "work_mem" TO %s', ["8MB"])]


def test_import_roles_refuses_a_foreign_role_and_a_hostile_setting():
    role = {"name": "postgres", "attributes": {}, "connection_limit": -1, "valid_until": None, "password": None,
            "member_of": [], "settings": []}  # fmt: skip
    with pytest.raises(ValueError):
        postgres.import_roles(FakeConnection(), [role], "bob")
    with pytest.raises(ValueError, match="setting"):
        postgres._apply_setting(FakeConnection(), sql.Identifier("bob"), "work_mem TO 1; DROP ROLE x; --=1")


def test_freeze_takes_login_from_roles_that_had_it_and_ends_sessions():
    conn = FakeConnection(
        [
            ("rolname = %s OR rolname LIKE", [("bob",), ("bob_ro",)]),
            ("WHERE rolcanlogin", [("bob",)]),
            ("pg_terminate_backend", [(3,)]),
        ]
    )
    assert postgres.freeze_users(conn, "bob") == {"account": "bob", "users": ["bob"], "sessions_ended": 3}
    assert conn.statements("NOLOGIN") == [('ALTER ROLE "bob" NOLOGIN', None)]
    assert conn.statements("pg_terminate_backend")[0][1] == (["bob", "bob_ro"],)


def test_unfreeze_gives_login_back_only_to_recorded_roles():
    conn = FakeConnection([("NOT rolcanlogin", [("bob",)])])
    assert postgres.unfreeze_users(conn, {"account": "bob", "users": ["bob"]}) == {"account": "bob", "users": ["bob"]}
    assert conn.statements(" LOGIN") == [('ALTER ROLE "bob" LOGIN', None)]
    with pytest.raises(ValueError):
        postgres.unfreeze_users(conn, {"account": "bob", "users": ["postgres"]})


def test_table_checksums_quote_every_identifier_in_a_read_only_snapshot():
    conn = FakeConnection(
        [
            ("current_database", [("bob_app",)]),
            ("relkind", [("r", "My Schema", 'we"ird'), ("S", "public", "plants_id_seq")]),
            ("ROW(t.*)", [(2, 77)]),
            ("last_value", [(1, 5)]),
        ]
    )
    assert postgres.table_checksums(conn, "bob_app") == {
        'My Schema.we"ird': (2, "4d"),
        "public.plants_id_seq": (1, "5"),
    }
    texts = [text for text, _args in conn.executed]
    assert texts[0] == "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" and texts[-1] == "ROLLBACK"
    assert any('FROM ONLY "My Schema"."we""ird" AS t' in text for text in texts)
    assert ("SELECT set_config(%s, %s, true)", ("TimeZone", "UTC")) in conn.executed


def test_table_checksums_need_a_connection_to_that_database():
    conn = FakeConnection([("current_database", [("postgres",)])])
    with pytest.raises(ValueError, match="bob_app"):
        postgres.table_checksums(conn, "bob_app")
    assert conn.executed[-1][0] == "ROLLBACK"


def test_table_stages_carry_no_password(tmp_path):
    source = postgres.endpoint("10.0.0.1", "admin", HOSTILE_PASSWORD)
    destination = postgres.endpoint("127.0.0.1", "admin", HOSTILE_PASSWORD + "2")
    copier = postgres.PostgresDumpCopy(source, destination, "bob", parallel=2, tmpdir=str(tmp_path),
                                       run_command=run_pipeline)  # fmt: skip
    copier.write_credentials()
    statements = (sql.SQL("COPY t TO STDOUT"), sql.SQL("TRUNCATE ONLY t"), sql.SQL("COPY t FROM STDIN"))
    stages = copier._table_stages("bob_app", "public.t", *statements, "UTF8", None)
    for stage in stages:
        assert stage.argv[0] == "psql"
        assert not any(HOSTILE_PASSWORD in argument for argument in stage.argv)
        passfile = parse_dsn(next(a for a in stage.argv if a.startswith("--dbname=")).split("=", 1)[1])["passfile"]
        assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
    assert "--single-transaction" in stages[1].argv
    copier.cleanup()
    assert list(tmp_path.iterdir()) == []
