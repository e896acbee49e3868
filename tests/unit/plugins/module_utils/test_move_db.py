"""The account's database side of a move: its freeze record across a re-run, and the removal of replication after a
failure, on stub copiers (the engines themselves run against the lab)."""

from __future__ import annotations

from ansible_collections.hosting.migration.plugins.module_utils.move_db import DatabaseSide, merge_freeze

FIRST = {"account": "alice", "users": [{"user": "alice", "host": "%"}], "sessions_ended": 2}


def test_a_re_run_keeps_the_first_record_and_adds_users_it_locked_for_the_first_time():
    # The first attempt locked alice@%; the re-run finds her locked (not listed) and locks alice_new@%, created since.
    again = {"account": "alice", "users": [{"user": "alice_new", "host": "%"}], "sessions_ended": 0}
    merged = merge_freeze(FIRST, again)
    assert merged["users"] == [{"user": "alice", "host": "%"}, {"user": "alice_new", "host": "%"}]
    assert merged["sessions_ended"] == 2
    assert merge_freeze(FIRST, {"account": "alice", "users": [], "sessions_ended": 0}) == FIRST
    assert merge_freeze(None, again) == again
    assert merge_freeze({}, again) == again
    roles = merge_freeze({"account": "bob", "users": ["bob"]}, {"account": "bob", "users": ["bob", "bob_ro"]})
    assert roles["users"] == ["bob", "bob_ro"]


class Copier:
    def __init__(self):
        self.dropped = []

    def drop_account_replication(self, databases):
        self.dropped.append(databases)

    def cleanup(self):
        pass


def test_a_failed_move_removes_the_replication_of_an_engine_without_databases(monkeypatch):
    side = DatabaseSide(None, {"db_method": "auto", "db_parallel": 2, "source": {}, "destination": {}}, "bob")
    side.engines = {"mariadb": (None, None), "postgresql": (None, None)}
    copiers = {"mariadb": Copier(), "postgresql": Copier()}
    monkeypatch.setattr(side, "copier", copiers.__getitem__)
    monkeypatch.setattr(side, "databases", {"mariadb": [], "postgresql": ["bob_app"]}.__getitem__)
    side.drop_replication()
    assert copiers["mariadb"].dropped == [[]] and copiers["postgresql"].dropped == [["bob_app"]]
    side.method = "dump"  # the dump method set nothing up: no server is reached
    side.drop_replication()
    assert copiers["mariadb"].dropped == [[]]
