"""The live methods' names and their choice per engine (the methods themselves run against the lab:
tests/integration/test_pg_live.py, test_mariadb_live.py)."""

from __future__ import annotations

import re

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy
from ansible_collections.hosting.migration.plugins.module_utils.mariadb import endpoint as mariadb_endpoint
from ansible_collections.hosting.migration.plugins.module_utils.mariadb_live import MariaDBLiveCopy
from ansible_collections.hosting.migration.plugins.module_utils.pg_live import (
    PostgresLiveCopy,
    missing_settings,
    replication_name,
    verification_slot,
)
from ansible_collections.hosting.migration.plugins.module_utils.postgres import endpoint

SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


@pytest.mark.parametrize("database", ["bob_app", "bob_App", "bob_" + "x" * 63, "bob_a1_b2"])
def test_replication_names_are_valid_slot_names(database):
    assert SLOT_NAME.fullmatch(replication_name(database))


def test_replication_names_of_different_databases_differ():
    names = ["bob_app", "bob_App", "bob_APP", "bob_" + "x" * 63, "bob_" + "x" * 62 + "y"]
    assert len({replication_name(n) for n in names}) == len(names)


def test_each_engine_has_its_live_method_which_auto_picks(tmp_path):
    source = endpoint(host="10.0.0.1", user="admin", password="pw")
    copier = dbcopy.database_copy("postgresql", "live", source, source, "bob", tmpdir=str(tmp_path))
    assert isinstance(copier, PostgresLiveCopy) and copier.method == "live"
    mariadb_source = mariadb_endpoint(host="10.0.0.1", user="admin", password="pw")
    copier = dbcopy.database_copy("mariadb", "live", mariadb_source, mariadb_source, "alice", tmpdir=str(tmp_path))
    assert isinstance(copier, MariaDBLiveCopy) and copier.method == "live"
    assert set(dbcopy.AUTO_LIVE_ENGINES) == {"postgresql", "mariadb"}
    with pytest.raises(ValueError, match="unknown database copy method 'stream'"):
        dbcopy.database_copy("mariadb", "stream", mariadb_source, mariadb_source, "alice", tmpdir=str(tmp_path))


@pytest.mark.parametrize("database", ["bob_app", "bob_App", "bob_" + "x" * 63])
def test_verification_slots_are_valid_and_apart_from_the_replication_s(database):
    assert SLOT_NAME.fullmatch(verification_slot(database))
    assert verification_slot(database) != replication_name(database)


@pytest.mark.parametrize(
    ("settings", "changes"),
    [
        ({"wal_level": "replica", "max_replication_slots": 10, "max_wal_senders": 10},
         {"wal_level": "logical", "max_replication_slots": 16, "max_wal_senders": 16}),
        ({"wal_level": "logical", "max_replication_slots": 20, "max_wal_senders": 16}, {}),
        ({"wal_level": "logical", "max_replication_slots": 16, "max_wal_senders": 8}, {"max_wal_senders": 16}),
        ({"wal_level": "minimal", "max_replication_slots": 32, "max_wal_senders": 32}, {"wal_level": "logical"}),
    ],
)  # fmt: skip
def test_missing_settings_asks_only_for_what_falls_short(settings, changes):
    assert missing_settings(settings, 16) == changes
