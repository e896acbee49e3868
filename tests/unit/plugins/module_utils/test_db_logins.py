"""db_logins: when a database user can still log in, judged without its password."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import db_logins

MD5 = "md5" + "0" * 32
SCRAM = "SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2VydmVy"


@pytest.mark.parametrize("password, kind", [(MD5, "md5"), (SCRAM, "scram"), (None, "none"), ("", "none"),
                                            ("plain", "unknown")])  # fmt: skip
def test_hash_kinds(password, kind):
    assert db_logins.pg_hash_kind(password) == kind


def role(kind="md5", can_login=True, valid_until=None):
    return {"name": "bob", "can_login": can_login, "valid_until": valid_until, "password_kind": kind}


def test_an_md5_role_cannot_log_in_where_scram_is_required_and_says_what_to_do():
    (problem,) = db_logins.pg_login_problems(role("md5"), "scram-sha-256")
    assert "md5" in problem and "set the password again" in problem


@pytest.mark.parametrize("kind, method", [("md5", "md5"), ("scram", "md5"), ("scram", "scram-sha-256"),
                                          ("md5", "password"), ("none", "trust")])  # fmt: skip
def test_accepted_combinations(kind, method):
    assert db_logins.pg_login_problems(role(kind), method) == []


def test_no_rule_a_reject_rule_no_login_and_an_expired_password_are_problems():
    now = datetime(2026, 11, 28, tzinfo=timezone.utc)  # noqa: UP017
    assert "no pg_hba.conf rule" in db_logins.pg_login_problems(role("scram"), None)[0]
    assert "rejects" in db_logins.pg_login_problems(role("scram"), "reject")[0]
    assert "no LOGIN" in db_logins.pg_login_problems(role("scram", can_login=False), "md5")[0]
    expired = db_logins.pg_login_problems(role("scram", valid_until="2025-01-01 00:00:00+00"), "md5", now)
    assert "expired" in expired[0]
    assert db_logins.pg_login_problems(role("scram", valid_until="infinity"), "md5", now) == []
    assert db_logins.pg_login_problems(role("scram", valid_until="2027-01-01 00:00:00+00"), "md5", now) == []


def test_the_first_matching_tcp_rule_decides():
    rules = [
        ("local", ["all"], ["all"], None, None, "peer"),
        ("host", ["all"], ["all"], "127.0.0.1", "255.255.255.255", "scram-sha-256"),
        ("host", ["other_db"], ["all"], "10.77.0.0", "255.255.255.0", "reject"),
        ("host", ["all"], ["alice"], "10.77.0.0", "255.255.255.0", "trust"),
        ("host", ["bob_app"], ["all"], "all", None, "password"),
        ("host", ["all"], ["all"], "10.77.0.0", "255.255.255.0", "md5"),
    ]
    assert db_logins.pg_method_for(rules, "bob", ["bob_app"], "127.0.0.1") == "scram-sha-256"
    assert db_logins.pg_method_for(rules, "bob", ["bob_app"], "10.77.0.1") == "password"
    assert db_logins.pg_method_for(rules, "alice", ["alice_db"], "10.77.0.9") == "trust"
    assert db_logins.pg_method_for(rules, "carol", ["carol_x"], "10.77.0.9") == "md5"
    assert db_logins.pg_method_for(rules, "carol", ["carol_x"], "192.0.2.1") is None
