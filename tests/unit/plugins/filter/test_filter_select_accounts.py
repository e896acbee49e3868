"""select_accounts: 'all', lists of names, JMESPath expressions, and what is refused."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter import select_accounts as plugin
from ansible_collections.hosting.migration.plugins.filter.select_accounts import FilterModule, select_accounts

ACCOUNTS = [
    {"name": "alice", "location": "client", "size_bytes": 52_000_000, "databases": [{"engine": "mariadb"}]},
    {"name": "bob", "location": "transit", "size_bytes": 900_000, "databases": [{"engine": "postgresql"}]},
    {"name": "carol", "location": "client", "size_bytes": 1_000_001, "databases": []},
]
BY_NAME = {account["name"]: {k: v for k, v in account.items() if k != "name"} for account in ACCOUNTS}


@pytest.mark.parametrize("accounts", [ACCOUNTS, BY_NAME], ids=["list", "dict"])
def test_jmespath_expressions(accounts):
    assert select_accounts(accounts, "[?location=='client'].name") == ["alice", "carol"]
    assert [a["name"] for a in select_accounts(accounts, "[?size_bytes > `1000000`]")] == ["alice", "carol"]
    assert select_accounts(accounts, "[?databases[?engine=='postgresql']].name") == ["bob"]
    assert select_accounts(accounts, "length(@)") == 3


def test_dict_input_gains_the_name():
    found = select_accounts(BY_NAME, "[?name=='bob']")
    assert found == [
        {"name": "bob", "location": "transit", "size_bytes": 900_000, "databases": [{"engine": "postgresql"}]}
    ]


def test_all_is_every_name_in_order():
    assert select_accounts(ACCOUNTS, "all") == ["alice", "bob", "carol"]
    assert select_accounts(BY_NAME, " all ") == ["alice", "bob", "carol"]
    assert select_accounts([], "all") == []


def test_names_in_their_order_without_repeats():
    assert select_accounts(ACCOUNTS, "carol") == ["carol"]
    assert select_accounts(ACCOUNTS, "carol, alice,carol") == ["carol", "alice"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("alice,dave", r"unknown account\(s\) dave \(known: alice, bob, carol\)"),
        ("alice,,bob", "invalid account name ''"),
        ("Alice", "invalid account name 'Alice'"),
        ("a", "invalid account name 'a'"),
        ("[?location=='client'", "invalid JMESPath expression \"\\[\\?location=='client'\""),
        ("[?size_bytes > 1000000]", "invalid JMESPath expression"),
        ("length(name)", "JMESPath expression 'length\\(name\\)' failed"),
        ("", "query must be a non-empty string"),
        (None, "query must be a non-empty string"),
    ],
)
def test_bad_queries_are_refused(query, message):
    with pytest.raises(AnsibleFilterError, match=message):
        select_accounts(ACCOUNTS, query)


@pytest.mark.parametrize(
    ("accounts", "message"),
    [
        ("alice", "accounts must be a list of dicts or a dict"),
        ([{"location": "client"}], r"accounts\[0\]: account name must be a string"),
        ([{"name": "Bob"}], "invalid account name 'Bob'"),
        ([{"name": "bob"}, {"name": "bob"}], "account bob is listed twice"),
        (["bob"], r"accounts\[0\] must be a dict"),
        ({"bob": "transit"}, "account 'bob' must be a dict"),
        ({"bob": {"name": "alice"}}, "account 'bob' names another account"),
        ({"b": {}}, "invalid account name 'b'"),
    ],
)
def test_bad_accounts_are_refused(accounts, message):
    with pytest.raises(AnsibleFilterError, match=message):
        select_accounts(accounts, "all")


def test_without_jmespath_only_expressions_fail(monkeypatch):
    monkeypatch.setattr(plugin, "HAS_JMESPATH", False)
    assert select_accounts(ACCOUNTS, "alice") == ["alice"]
    with pytest.raises(AnsibleFilterError, match="jmespath Python library is required"):
        select_accounts(ACCOUNTS, "[].name")


def test_registered_under_its_name():
    assert FilterModule().filters() == {"select_accounts": select_accounts}
