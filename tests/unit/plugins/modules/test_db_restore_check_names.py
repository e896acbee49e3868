"""db_restore_check without servers: scratch names, refusals before anything runs, error messages, and a check mode
that restores and drops nothing (the copier and the engine's statements stubbed)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy
from ansible_collections.hosting.migration.plugins.modules import db_restore_check as drc

SECRET = "s3cret-'pw\"$;"
ENDPOINT = {"host": "10.77.0.10", "port": None, "user": "hosting_admin", "password": SECRET}


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.tmpdir = "/nonexistent"
        self.params = {
            "account": "carol",
            "source": {"mariadb": dict(ENDPOINT), "postgresql": None},
            "test_server": {"mariadb": dict(ENDPOINT, host="127.0.0.1"), "postgresql": None},
            "scratch_prefix": "hmcheck",
            **params,
        }

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs)


def test_scratch_name_is_prefix_and_database():
    assert drc.scratch_name("hmcheck", "carol", "carol_blog") == "hmcheck_carol_blog"


def test_a_long_scratch_name_is_hashed_and_still_names_the_account():
    name = drc.scratch_name("hmcheck", "carol", "carol_" + "x" * 60)
    assert len(name) <= 63 and name.startswith("hmcheck_carol_")
    assert name == drc.scratch_name("hmcheck", "carol", "carol_" + "x" * 60)


@pytest.mark.parametrize("database", ["alice_shop", "carol", "carol_x;drop", "carol_`x`", "carolx_blog"])
def test_a_database_of_another_account_or_a_hostile_name_gets_no_scratch_name(database):
    with pytest.raises(ValueError):
        drc.scratch_name("hmcheck", "carol", database)


def test_the_leftover_pattern_escapes_like_wildcards():
    assert drc.scratch_pattern("hmcheck", "carol") == "hmcheck\\_carol\\_%"


@pytest.mark.parametrize("account", ["Carol", "carol\n", "c", "carol; DROP DATABASE x", "../carol", ""])
def test_hostile_account_names_are_refused_before_any_connection(account, monkeypatch):
    monkeypatch.setattr(dbcopy, "database_copy", lambda *a, **k: pytest.fail("a copier was built"))
    with pytest.raises(ValueError, match="invalid account name"):
        drc.RestoreCheck(FakeModule(account=account))


@pytest.mark.parametrize("prefix", ["hm_check", "HM", "h", "hmcheck; x", "a" * 17])
def test_bad_scratch_prefixes_are_refused(prefix):
    with pytest.raises(ValueError, match="scratch_prefix"):
        drc.RestoreCheck(FakeModule(scratch_prefix=prefix))


def test_an_engine_on_one_side_only_is_refused():
    with pytest.raises(ValueError, match="one side only"):
        drc.RestoreCheck(FakeModule(test_server={"mariadb": None, "postgresql": None}))


def test_the_endpoint_repr_hides_the_password():
    check = drc.RestoreCheck(FakeModule())
    assert SECRET not in repr(check.endpoints)


def test_errors_keep_the_stage_and_the_server_error_not_the_echoed_statement():
    error = dbcopy.CommandError(
        "mariadb restoring carol_blog into hmcheck_carol_blog on the test server exited with status 1: "
        "--------------\nCREATE TABLE `posts` (...)\n--------------\n\n"
        "ERROR 1118 (42000) at line 16: Row size too large"
    )
    assert drc._one_line(error) == (
        "mariadb restoring carol_blog into hmcheck_carol_blog on the test server exited with status 1: "
        "ERROR 1118 (42000) at line 16: Row size too large"
    )


class FakeCopier:
    account = "carol"

    def __init__(self):
        self.ran = []
        self.cleaned = False

    @contextmanager
    def connected(self, side, database=None):
        yield side

    def databases(self, conn):
        return ["carol_blog"]

    def database_sizes(self, conn, names):
        return dict.fromkeys(names, 16384)

    def run(self, stages):
        self.ran.append(stages)

    def cleanup(self):
        self.cleaned = True


class RecordingCheck(drc.MariaDBCheck):
    """The MariaDB check with its statements recorded instead of sent."""

    calls: list = []
    leftover: list = []
    refuse_restore = False

    def leftovers(self, test):
        return list(self.leftover)

    def lock(self, test):
        return True

    def drop(self, test, name):
        self.calls.append(("drop", name))
        if name in self.leftover:
            self.leftover.remove(name)

    def create_scratch(self, source, test, database, scratch):
        self.calls.append(("create", scratch))
        if self.refuse_restore:
            raise RuntimeError("ERROR 1118 (42000): Row size too large")

    def write_credentials(self):
        self.source_file = self.test_file = "/nonexistent/file"

    def findings(self, source, test, database, restored):
        return []


@pytest.fixture
def stubbed(monkeypatch):
    copier = FakeCopier()
    monkeypatch.setattr(dbcopy, "database_copy", lambda *a, **k: copier)
    monkeypatch.setitem(drc.CHECKS, "mariadb", RecordingCheck)
    monkeypatch.setattr(drc.mariadb, "HAS_DRIVER", True)
    RecordingCheck.calls = []
    RecordingCheck.leftover = []
    RecordingCheck.refuse_restore = False
    return copier


def test_check_mode_plans_without_creating_restoring_or_dropping(stubbed):
    RecordingCheck.leftover = ["hmcheck_carol_old"]
    result = drc.RestoreCheck(FakeModule(check_mode=True)).run()
    assert RecordingCheck.calls == [] and stubbed.ran == []
    assert result["changed"] is False and result["ready"] is None
    assert result["databases"] == [
        {"engine": "mariadb", "database": "carol_blog", "size_bytes": 16384, "scratch": "hmcheck_carol_blog"}
    ]
    assert result["leftovers"] == ["mariadb:hmcheck_carol_old"]


def test_a_run_restores_then_drops_and_reports_no_change(stubbed):
    result = drc.RestoreCheck(FakeModule()).run()
    assert RecordingCheck.calls == [("create", "hmcheck_carol_blog"), ("drop", "hmcheck_carol_blog")]
    assert len(stubbed.ran) == 1 and [stage.argv[0] for stage in stubbed.ran[0]] == ["mariadb-dump", "mariadb"]
    assert result["changed"] is False and result["ready"] is True and stubbed.cleaned
    assert SECRET not in repr(result) and SECRET not in repr(stubbed.ran)


def test_a_failed_restore_is_a_result_and_its_scratch_database_is_still_dropped(stubbed):
    RecordingCheck.refuse_restore = True
    result = drc.RestoreCheck(FakeModule()).run()
    assert ("drop", "hmcheck_carol_blog") in RecordingCheck.calls
    (entry,) = result["databases"]
    assert entry["ok"] is False and "Row size too large" in entry["errors"][0]
    assert result["ready"] is False and result["changed"] is False


def test_leftovers_of_a_killed_run_are_dropped_first_and_reported_as_the_change(stubbed):
    RecordingCheck.leftover = ["hmcheck_carol_old"]
    result = drc.RestoreCheck(FakeModule()).run()
    assert RecordingCheck.calls[0] == ("drop", "hmcheck_carol_old")
    assert result["dropped_leftovers"] == ["mariadb:hmcheck_carol_old"] and result["changed"] is True
