"""downtime_estimate: totals, measured and provider rates, refusals."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.downtime_estimate import FilterModule, downtime_estimate

GB = 10**9


def test_measured_rates_and_provider_rule():
    found = downtime_estimate(
        [
            {"name": "alice_shop", "engine": "mariadb", "size_bytes": GB},
            {"name": "alice_blog", "engine": "postgresql", "size_bytes": GB // 2},
            {"engine": "mariadb", "size_bytes": GB},
        ]
    )
    assert found == {
        "size_bytes": 5 * GB // 2,
        "size_gb": 2.5,
        "provider_s": 150.0,
        "estimate_s": 57.8,  # 2.0 + 2 GB * 25.3 + 0.5 GB * 10.4
        "estimate_dump_s": 57.8,
        "per_engine": {
            "mariadb": {"size_bytes": 2 * GB, "estimate_s": 50.6, "method": "dump"},
            "postgresql": {"size_bytes": GB // 2, "estimate_s": 5.2, "method": "dump"},
        },
    }


def test_live_engines_take_the_live_rate_and_the_dump_estimate_stays_beside():
    found = downtime_estimate(
        [{"engine": "mariadb", "size_bytes": 4 * GB}, {"engine": "postgresql", "size_bytes": 4 * GB}],
        rates={"mariadb": 40},
        live_engines=["postgresql"],
    )
    assert found["per_engine"]["postgresql"] == {"size_bytes": 4 * GB, "estimate_s": 2.9, "method": "live"}
    assert found["per_engine"]["mariadb"] == {"size_bytes": 4 * GB, "estimate_s": 160.0, "method": "dump"}
    assert found["estimate_s"] == 164.9  # 2.0 + 160 + 4 * 0.73
    assert found["estimate_dump_s"] == 203.6  # 2.0 + 160 + 4 * 10.4


def test_rates_override_per_engine_and_options():
    found = downtime_estimate(
        [{"engine": "mariadb", "size_bytes": GB}, {"engine": "postgresql", "size_bytes": GB}],
        rates={"mariadb": 40},
        fixed_s=0,
        provider_s_per_gb=30,
    )
    assert found["per_engine"]["mariadb"]["estimate_s"] == 40.0
    assert found["per_engine"]["postgresql"]["estimate_s"] == 10.4
    assert found["estimate_s"] == 50.4
    assert found["provider_s"] == 60.0


def test_gb_is_ten_to_the_ninth_bytes():
    found = downtime_estimate([{"engine": "postgresql", "size_bytes": 2**30}], fixed_s=0)
    assert found["size_gb"] == 1.074
    assert found["provider_s"] == 64.4


def test_no_databases_is_the_fixed_part_only():
    assert downtime_estimate([]) == {
        "size_bytes": 0,
        "size_gb": 0.0,
        "provider_s": 0.0,
        "estimate_s": 2.0,
        "estimate_dump_s": 2.0,
        "per_engine": {},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([{"engine": "mariadb", "size_bytes": -1}],), "must not be negative"),
        (([{"engine": "mysql", "size_bytes": 1}],), "unknown engine 'mysql'"),
        (([{"name": "shop", "engine": "mariadb"}],), r"databases\[0\] \(shop\) size_bytes must be an integer"),
        (([{"engine": "mariadb", "size_bytes": "12"}],), "must be an integer"),
        (([{"engine": "mariadb", "size_bytes": True}],), "must be an integer"),
        (([{"engine": "mariadb", "size_bytes": 1.5}],), "must be an integer"),
        (("mariadb",), "databases must be a list"),
        ((["mariadb"],), r"databases\[0\] must be a dict"),
        (([], {"oracle": 1}), "unknown engine 'oracle'"),
        (([], {"mariadb": -1}), "must be a number >= 0"),
        (([], ["mariadb"]), "rates must be a dict"),
        (([], None, -2), "fixed_s must be a number >= 0"),
        (([], None, 2, float("nan")), "provider_s_per_gb must be a number >= 0"),
        (([], None, 2, 60, "postgresql"), "live_engines must be a list of engines"),
        (([], None, 2, 60, ["oracle"]), "live_engines must be a list of engines"),
    ],
)
def test_bad_input_is_refused(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        downtime_estimate(*args)


def test_registered_under_its_name():
    assert FilterModule().filters() == {"downtime_estimate": downtime_estimate}
