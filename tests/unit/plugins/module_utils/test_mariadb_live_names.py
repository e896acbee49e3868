"""The MariaDB live method's names, the forms it hands to the servers, and when it keeps or drops the account's
replication connection, on stub statuses (the method itself runs against the lab:
tests/integration/test_mariadb_live.py)."""

from __future__ import annotations

import re

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import mariadb_live
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import CopyError
from ansible_collections.hosting.migration.plugins.module_utils.mariadb_live import (
    _wild_pattern,
    connection_name,
    native_password_hash,
    replication_filter,
    replication_user,
)


def test_the_source_gets_the_password_s_native_hash_not_the_password():
    # MySQL's documented PASSWORD('password').
    assert native_password_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    assert re.fullmatch(r"\*[0-9A-F]{40}", native_password_hash("x y'\"$;()\\"))


@pytest.mark.parametrize(
    ("database", "pattern"),
    [("alice_shop", "alice\\_shop.%"), ("alice_a_b", "alice\\_a\\_b.%"), ("alice_x9", "alice\\_x9.%")],
)
def test_wild_patterns_match_the_database_only(database, pattern):
    assert _wild_pattern(database) == pattern


def test_the_filter_names_each_database_and_is_never_empty():
    assert replication_filter(["alice_shop", "alice_b"]) == "alice\\_shop.%,alice\\_b.%"
    # An empty replicate_wild_do_table replicates the whole server: refused, not set.
    with pytest.raises(CopyError, match="whole server"):
        replication_filter([])


def test_names_fit_mariadb_limits():
    account = "a" + "b" * 31
    assert len(connection_name(account)) <= 64 and len(replication_user(account)) <= 80
    assert connection_name("alice") == "hm_alice" and replication_user("alice") == "hm_repl_alice"


def copier(monkeypatch, status):
    monkeypatch.setattr(mariadb_live, "_status", lambda conn, name: status)
    return mariadb_live.MariaDBLiveCopy(None, None, "alice", parallel=1, tmpdir="/nonexistent", run_command=None)


RUNNING = {"Slave_SQL_Running": "Yes", "Slave_IO_Running": "Yes"}


def test_a_running_connection_is_kept_only_with_the_account_s_exact_filter(monkeypatch):
    databases = ["alice_shop", "alice_b"]
    kept = copier(monkeypatch, {**RUNNING, "Replicate_Wild_Do_Table": "alice\\_b.%,alice\\_shop.%"})
    assert kept._replicating(None, databases) is None
    # A destination restart forgets a filter set with SET GLOBAL: the connection then replicates everything.
    for filtered in ("", "alice\\_shop.%", "alice\\_shop.%,alice\\_b.%,bob\\_app.%"):
        again = copier(monkeypatch, {**RUNNING, "Replicate_Wild_Do_Table": filtered})
        assert "not filtered to the account's databases" in again._replicating(None, databases), filtered
    assert "not filtered" in kept._replicating(None, [])
    assert copier(monkeypatch, None)._replicating(None, databases) == mariadb_live.NOT_STARTED


def test_the_account_s_connection_is_dropped_even_when_it_has_no_database_left(monkeypatch):
    calls = []
    live = copier(monkeypatch, None)
    monkeypatch.setattr(live, "drop_replication", lambda database=None: calls.append(database))
    live.drop_account_replication([])
    assert calls == [None]
