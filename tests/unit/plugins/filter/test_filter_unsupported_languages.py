"""unsupported_languages: langs.py's support matrix and replacement rule applied to a list of sites."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.unsupported_languages import (
    FilterModule,
    unsupported_languages,
)

SITES = [
    {"account": "carol", "domain": "www.carol.test", "language": "php", "version": "7.4"},
    {"account": "carol", "domain": "carol.test", "language": "php", "version": "7.4"},
    {"account": "dave", "domain": "dave.test", "language": "php", "version": 7.4},
    {"account": "alice", "domain": "alice.test", "language": "php", "version": "8.2"},
    {"account": "bob", "domain": "bobs-garden.test", "language": "python", "version": "3.9"},
    {"account": "bob", "domain": "old.bobs-garden.test", "language": "php", "version": "5.6"},
    {"language": "ruby", "version": "3.0"},
]


def test_unsupported_versions_with_replacements_sorted_and_deduplicated():
    assert unsupported_languages(SITES, "2024") == [
        {"language": "php", "version": "5.6", "replacement": "8.1", "accounts": ["bob"],
         "domains": ["old.bobs-garden.test"]},
        {"language": "php", "version": "7.4", "replacement": "8.1", "accounts": ["carol", "dave"],
         "domains": ["carol.test", "dave.test", "www.carol.test"]},
        {"language": "python", "version": "3.9", "replacement": "3.11", "accounts": ["bob"],
         "domains": ["bobs-garden.test"]},
        {"language": "ruby", "version": "3.0", "replacement": None, "accounts": [], "domains": []},
    ]  # fmt: skip


def test_versions_sort_numerically():
    sites = [{"language": "php", "version": v} for v in ("7.10", "7.9", "10.0")]
    found = unsupported_languages(sites, "2020")
    assert [item["version"] for item in found] == ["7.9", "7.10", "10.0"]
    # No explicit replacement in 2020: the closest supported version not older, else the newest.
    assert [item["replacement"] for item in found] == ["8.1", "8.1", "8.1"]


def test_everything_supported_is_an_empty_list():
    assert unsupported_languages([{"language": "python", "version": "3.12"}], 2024) == []


def test_matrix_override_replaces_the_shipped_one():
    matrix = {"2024": {"languages": {"php": ["8.2", "8.3"]}, "replacements": {"php": {"7.4": "8.3"}}}}
    found = unsupported_languages(SITES[:4], "2024", matrix)
    assert [(item["version"], item["replacement"], item["accounts"]) for item in found] == [
        ("7.4", "8.3", ["carol", "dave"])
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((SITES, "2030"), "no support matrix for architecture '2030'"),
        ((SITES, "20/24"), "invalid architecture"),
        (("php", "2024"), "sites must be a list"),
        ((["php"], "2024"), r"sites\[0\] must be a dict"),
        (([{"language": "PHP", "version": "7.4"}], "2024"), r"sites\[0\]: invalid language 'PHP'"),
        (([{"language": "php", "version": "7.x"}], "2024"), "invalid version '7.x'"),
        (([{"language": "php"}], "2024"), "invalid version None"),
        (([{"language": "php", "version": "7.4", "account": "Carol"}], "2024"), "invalid account name 'Carol'"),
        (([{"language": "php", "version": "7.4", "domain": "a b"}], "2024"), "invalid domain 'a b'"),
        (([], "2024", ["2024"]), "matrix must be a dict of architectures"),
        (([], "2024", {"2024": {"languages": {"php": ["8.2"]}, "replacements": {"php": {"7.4": "9.0"}}}}),
         "replacement php 9.0 is not supported"),
    ],
)  # fmt: skip
def test_bad_input_is_refused(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        unsupported_languages(*args)


def test_registered_under_its_name():
    assert FilterModule().filters() == {"unsupported_languages": unsupported_languages}
