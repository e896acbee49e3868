"""report_rows: one row per account, sorted, with None for what is not known."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.report_rows import FilterModule, report_rows

ACCOUNTS = [
    {"name": "bob", "domains": [{"name": "bobs-garden.test", "provider_dns": False}], "size_bytes": 10, "db_bytes": 7},
    {"name": "alice", "domains": ["alice.test", "www.alice.test"], "size_bytes": 52, "db_bytes": 310, "uid": 1001},
    {"name": "carol"},
]
MOVES = {
    "alice": {"step4": {"downtime_s": 9.8, "verified": True}, "step7": {"downtime_s": 8, "verified": True}},
    "bob": {"step4": {"downtime_s": 3.5, "verified": True}, "step7": {"downtime_s": 4.0, "verified": False}},
    "dave": {"step4": {"downtime_s": 1.5}},
}


def test_one_row_per_account_sorted_with_none_where_unknown():
    assert report_rows(ACCOUNTS, MOVES) == [
        {"account": "alice", "domains": ["alice.test", "www.alice.test"], "files_bytes": 52, "db_bytes": 310,
         "downtime_step4_s": 9.8, "downtime_step7_s": 8.0, "verified_step4": True, "verified_step7": True,
         "verified": True},
        {"account": "bob", "domains": ["bobs-garden.test"], "files_bytes": 10, "db_bytes": 7,
         "downtime_step4_s": 3.5, "downtime_step7_s": 4.0, "verified_step4": True, "verified_step7": False,
         "verified": False},
        {"account": "carol", "domains": None, "files_bytes": None, "db_bytes": None,
         "downtime_step4_s": None, "downtime_step7_s": None, "verified_step4": None, "verified_step7": None,
         "verified": None},
        {"account": "dave", "domains": None, "files_bytes": None, "db_bytes": None,
         "downtime_step4_s": 1.5, "downtime_step7_s": None, "verified_step4": None, "verified_step7": None,
         "verified": None},
    ]  # fmt: skip


def test_verified_needs_both_steps():
    moves = {"alice": {"step4": {"verified": True}, "step7": None}}
    assert report_rows([{"name": "alice"}], moves)[0]["verified"] is None
    moves = {"alice": {"step4": {"verified": False}}}
    assert report_rows([{"name": "alice"}], moves)[0]["verified"] is False


def test_dict_of_accounts_and_no_moves():
    rows = report_rows({"alice": {"size_bytes": 1}}, None)
    assert [(row["account"], row["files_bytes"], row["downtime_step4_s"]) for row in rows] == [("alice", 1, None)]


@pytest.mark.parametrize(
    ("accounts", "moves", "message"),
    [
        ([{"name": "alice", "size_bytes": -1}], {}, "size_bytes of alice must not be negative"),
        ([{"name": "alice", "db_bytes": "7"}], {}, "db_bytes of alice must be an integer"),
        ([{"name": "alice", "domains": "alice.test"}], {}, "domains of alice must be a list"),
        ([{"name": "alice", "domains": [{"provider_dns": True}]}], {}, "a domain of alice has no name"),
        ([], ["alice"], "moves must be a dict"),
        ([], {"Alice": {}}, "invalid account name 'Alice'"),
        ([], {"alice": "done"}, r"moves\[alice\] must be a dict of steps"),
        ([], {"alice": {"step4": 12}}, r"moves\[alice\]\[step4\] must be a dict"),
        ([], {"alice": {"step4": {"downtime_s": -1}}}, r"moves\[alice\]\[step4\].downtime_s must be a number >= 0"),
        ([], {"alice": {"step7": {"verified": "yes"}}}, r"moves\[alice\]\[step7\].verified must be a boolean"),
        ("alice", {}, "accounts must be a list of dicts"),
    ],
)
def test_bad_input_is_refused(accounts, moves, message):
    with pytest.raises(AnsibleFilterError, match=message):
        report_rows(accounts, moves)


def test_registered_under_its_name():
    assert FilterModule().filters() == {"report_rows": report_rows}
