"""mariadb module_utils with the driver mocked at its boundary (a cursor): identifiers quoted, values bound, names
the account does not own refused, credentials only in 0600 files."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import mariadb
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import run_pipeline

HOSTILE_PASSWORD = "c'a\"r$o;l() \\pw #x\n\ty"


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.rows = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, statement, args=None):
        self.conn.executed.append((statement, args))
        self.rows = self.conn.answer(statement, args)

    def fetchall(self):
        return self.rows


class FakeConnection:
    """Answers each statement with the rows of the first (substring, rows) pair it contains."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.executed = []

    def cursor(self):
        return FakeCursor(self)

    def answer(self, statement, args):
        for key, rows in self.answers:
            if key in statement:
                return rows(args) if callable(rows) else rows
        return []

    def statements(self, containing=""):
        return [(s, a) for s, a in self.executed if containing in s]


def test_endpoint_never_shows_the_password():
    endpoint = mariadb.endpoint("10.0.0.1", "admin", HOSTILE_PASSWORD)
    assert HOSTILE_PASSWORD not in repr(endpoint)
    assert endpoint.port == 3306
    assert mariadb.endpoint("h", "u", "p", 3307).port == 3307
    with pytest.raises(ValueError):
        mariadb.endpoint("h\n[client]", "u", "p")


@pytest.mark.skipif(shutil.which("my_print_defaults") is None, reason="needs my_print_defaults (mariadb-client)")
def test_option_file_gives_the_tools_the_exact_password(tmp_path):
    text = mariadb.endpoint("10.0.0.1", "admin", HOSTILE_PASSWORD).option_file()
    path = tmp_path / "x.cnf"
    path.write_text(text)
    parsed = subprocess.run(
        ["my_print_defaults", f"--defaults-file={path}", "client"], capture_output=True, text=True, check=True
    ).stdout
    assert f"--password={HOSTILE_PASSWORD}\n" in parsed
    assert "--host=10.0.0.1\n" in parsed and "--protocol=tcp\n" in parsed


def test_quote_identifier_doubles_backticks():
    assert mariadb.quote_identifier("we`ird") == "`we``ird`"
    with pytest.raises(ValueError):
        mariadb.quote_identifier("")


def test_account_databases_bind_an_escaped_prefix_and_check_names_again():
    conn = FakeConnection([("SCHEMATA", [("alice_shop",), ("ALICE_other",), ("alice_blog",)])])
    assert mariadb.account_databases(conn, "alice") == ["alice_blog", "alice_shop"]
    ((statement, args),) = conn.executed
    assert "%s" in statement and "alice" not in statement
    assert args == ("alice\\_%",)


def test_account_databases_refuse_a_name_the_account_cannot_own():
    conn = FakeConnection([("SCHEMATA", [("alice_shop",), ("alice_x`; DROP DATABASE y; --",)])])
    with pytest.raises(ValueError, match="alice_x"):
        mariadb.account_databases(conn, "alice")


@pytest.mark.parametrize("account", ["a';DROP DATABASE x;--", "../etc", "-rf", "alice_shop"])
def test_hostile_account_refused_before_any_query(account):
    conn = FakeConnection()
    with pytest.raises(ValueError):
        mariadb.account_databases(conn, account)
    with pytest.raises(ValueError):
        mariadb.freeze_users(conn, account)
    assert conn.executed == []


def test_account_users_and_their_hosts_are_checked():
    conn = FakeConnection([("global_priv", [("alice", "%", 0), ("alice_ro", "10.0.0.%", 1)])])
    assert mariadb.account_users(conn, "alice") == [("alice", "%"), ("alice_ro", "10.0.0.%")]
    assert conn.executed[0][1] == ("alice", "alice\\_%")
    bad = FakeConnection([("global_priv", [("alice", "x' OR '1'='1", 0)])])
    with pytest.raises(ValueError, match="host"):
        mariadb.account_users(bad, "alice")


def test_export_binds_user_and_host():
    conn = FakeConnection(
        [
            ("global_priv", [("alice", "%", 0)]),
            ("SHOW CREATE USER", [("CREATE USER `alice`@`%` IDENTIFIED BY PASSWORD '*AB'",)]),
            (
                "SHOW GRANTS",
                [("GRANT USAGE ON *.* TO `alice`@`%`",), ("GRANT ALL PRIVILEGES ON `alice\\_%`.* TO `alice`@`%`",)],
            ),
        ]
    )
    (exported,) = mariadb.export_users(conn, "alice")
    assert exported["create"].endswith("'*AB'") and len(exported["grants"]) == 2
    assert conn.statements("SHOW CREATE USER") == [("SHOW CREATE USER %s@%s", ("alice", "%"))]
    assert conn.statements("SHOW GRANTS") == [("SHOW GRANTS FOR %s@%s", ("alice", "%"))]


def test_import_drops_then_replays_the_export_verbatim():
    conn = FakeConnection()
    users = [{"user": "alice", "host": "%", "create": "CREATE USER `alice`@`%` IDENTIFIED BY PASSWORD '*AB'",
              "grants": ["GRANT SELECT ON `alice\\_%`.* TO `alice`@`%`"]}]  # fmt: skip
    assert mariadb.import_users(conn, users, "alice") == ["alice@%"]
    assert conn.executed == [
        ("DROP USER IF EXISTS %s@%s", ("alice", "%")),
        ("CREATE USER `alice`@`%` IDENTIFIED BY PASSWORD '*AB'", None),  # no args: '%' is left alone
        ("GRANT SELECT ON `alice\\_%`.* TO `alice`@`%`", None),
    ]


@pytest.mark.parametrize(
    "entry",
    [
        {"user": "alice", "host": "%", "create": "DROP DATABASE alice_shop", "grants": []},
        {"user": "bob", "host": "%", "create": "CREATE USER `bob`@`%`", "grants": []},
        {"user": "alice", "host": "%'; DROP USER root; --", "create": "CREATE USER x", "grants": []},
    ],
)
def test_import_refuses_what_is_not_the_accounts_user(entry):
    conn = FakeConnection()
    with pytest.raises(ValueError):
        mariadb.import_users(conn, [entry], "alice")
    assert conn.executed == []


def test_freeze_locks_only_unlocked_users_ends_sessions_and_says_what_it_changed():
    conn = FakeConnection(
        [
            ("global_priv", [("alice", "%", 0), ("alice_ro", "%", 1)]),
            ("PROCESSLIST", [(11,), (12,)]),
        ]
    )
    changes = mariadb.freeze_users(conn, "alice")
    assert changes == {"account": "alice", "users": [{"user": "alice", "host": "%"}], "sessions_ended": 2}
    assert conn.statements("ACCOUNT LOCK") == [("ALTER USER %s@%s ACCOUNT LOCK", ("alice", "%"))]
    assert conn.statements("PROCESSLIST")[0][1] == ["alice", "alice_ro"]
    assert conn.statements("KILL") == [("KILL CONNECTION %s", (11,)), ("KILL CONNECTION %s", (12,))]


def test_unfreeze_unlocks_exactly_the_recorded_users_still_locked():
    conn = FakeConnection([("global_priv", [("alice", "%", 1), ("alice_ro", "%", 1), ("alice_app", "%", 0)])])
    changes = {"account": "alice", "users": [{"user": "alice", "host": "%"}, {"user": "alice_app", "host": "%"}]}
    assert mariadb.unfreeze_users(conn, changes) == {"account": "alice", "users": [{"user": "alice", "host": "%"}]}
    assert conn.statements("UNLOCK") == [("ALTER USER %s@%s ACCOUNT UNLOCK", ("alice", "%"))]


def test_unfreeze_refuses_a_tampered_record():
    conn = FakeConnection([("global_priv", [("alice", "%", 1)])])
    with pytest.raises(ValueError):
        mariadb.unfreeze_users(conn, {"account": "alice", "users": [{"user": "root", "host": "localhost"}]})
    assert conn.statements("UNLOCK") == []


def test_table_checksums_quote_every_identifier_and_hash_null_safely():
    conn = FakeConnection(
        [
            ("information_schema.COLUMNS", [("we`ird", "a`b"), ("we`ird", "c")]),
            ("SUM(CAST(CONV", [(3, 123456789)]),
        ]
    )
    assert mariadb.table_checksums(conn, "alice_sh`op") == {"we`ird": (3, format(123456789, "x"))}
    (statement, args) = conn.statements("SUM(")[0]
    assert args is None
    assert "FROM `alice_sh``op`.`we``ird`" in statement
    assert "CAST(`a``b` AS BINARY)" in statement and "ISNULL(`a``b`), ISNULL(`c`)" in statement
    assert "time_zone = '+00:00'" in statement


CREATE = """CREATE TABLE `orders` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `note` text DEFAULT NULL COMMENT ') ENGINE=MyISAM',
  PRIMARY KEY (`id`),
  CONSTRAINT `fk_product` FOREIGN KEY (`id`) REFERENCES `products` (`id`)
) ENGINE=InnoDB AUTO_INCREMENT=2048 DEFAULT CHARSET=utf8mb4 STATS_AUTO_RECALC=1 COMMENT=' STATS_AUTO_RECALC=1'"""


def test_loadable_table_turns_background_statistics_off_and_keeps_the_rest():
    loadable, original = mariadb.loadable_table(CREATE)
    assert original == "1"
    assert loadable.split("\n")[:-1] == CREATE.split("\n")[:-1]
    assert loadable.endswith(
        "AUTO_INCREMENT=2048 DEFAULT CHARSET=utf8mb4 STATS_AUTO_RECALC=0 COMMENT=' STATS_AUTO_RECALC=1'"
    )
    partitioned = CREATE.replace("STATS_AUTO_RECALC=1 ", "") + "\n PARTITION BY HASH (`id`)\nPARTITIONS 2"
    loadable, original = mariadb.loadable_table(partitioned)
    assert original == "DEFAULT" and "utf8mb4 STATS_AUTO_RECALC=0 COMMENT=" in loadable
    assert loadable.endswith(" PARTITION BY HASH (`id`)\nPARTITIONS 2")


def test_loadable_table_leaves_other_engines_alone():
    create = "CREATE TABLE `t` (\n  `a` int NOT NULL\n) ENGINE=MyISAM DEFAULT CHARSET=latin1"
    assert mariadb.loadable_table(create) == (create, None)


def test_table_stages_carry_no_password_and_quote_identifiers(tmp_path):
    source = mariadb.endpoint("10.0.0.1", "admin", HOSTILE_PASSWORD)
    destination = mariadb.endpoint("127.0.0.1", "admin", HOSTILE_PASSWORD + "2")
    copier = mariadb.MariaDBDumpCopy(source, destination, "alice", parallel=2, tmpdir=str(tmp_path),
                                     run_command=run_pipeline)  # fmt: skip
    copier.write_credentials()
    stages = copier._table_stages("alice_shop", "t`1", "`alice_shop`.`t``1`", ["a`b", "c"])
    for stage in stages:
        assert stage.argv[0] == "mariadb" and stage.argv[1].startswith("--defaults-extra-file=")
        assert not any(HOSTILE_PASSWORD in argument for argument in stage.argv)
        assert stat.S_IMODE(os.stat(stage.argv[1].split("=", 1)[1]).st_mode) == 0o600
    select, load = stages[0].argv[-1], stages[1].argv[-1]
    assert "SELECT QUOTE(`a``b`), QUOTE(`c`) FROM `alice_shop`.`t``1`" in select
    assert "INTO TABLE `alice_shop`.`t``1` CHARACTER SET binary" in load and load.endswith("(`a``b`, `c`)")
    copier.cleanup()
    assert list(tmp_path.iterdir()) == []
