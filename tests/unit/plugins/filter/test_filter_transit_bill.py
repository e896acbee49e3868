"""transit_bill: free days from delivery, then pro rata per day of each calendar month, in exact cents."""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.transit_bill import FilterModule, transit_bill


def test_nothing_to_pay_within_the_free_days():
    found = transit_bill("2024-05-02", "2024-05-15", 49)
    assert found == {
        "delivered": "2024-05-02",
        "finished": "2024-05-15",
        "free_until": "2024-05-15",
        "billable_days": 0,
        "amount": "0.00",
        "currency": "EUR",
        "days": [],
    }
    assert transit_bill("2024-05-02", "2024-05-02", 49)["amount"] == "0.00"


def test_the_day_after_the_free_days_is_billed():
    found = transit_bill("2024-05-02", "2024-05-16", "31.00")
    assert found["billable_days"] == 1
    assert found["days"] == [{"month": "2024-05", "days": 1, "amount": "1.00"}]
    assert found["amount"] == "1.00"


def test_across_a_month_boundary_in_a_leap_february():
    # Free 2024-02-10 .. 2024-02-23; billed 24..29 February (6 of 29 days) and 1..5 March (5 of 31 days).
    found = transit_bill("2024-02-10", "2024-03-05", "29.90")
    assert found["free_until"] == "2024-02-23"
    assert found["billable_days"] == 11
    assert found["days"] == [
        {"month": "2024-02", "days": 6, "amount": "6.19"},  # 29.90 * 6 / 29 = 6.186...
        {"month": "2024-03", "days": 5, "amount": "4.82"},  # 29.90 * 5 / 31 = 4.822...
    ]
    assert found["amount"] == "11.01"


def test_february_of_a_common_year_has_28_days():
    found = transit_bill(date(2023, 2, 1), date(2023, 2, 28), 28, free_days=0)
    assert found["free_until"] == "2023-01-31"
    assert found["days"] == [{"month": "2023-02", "days": 28, "amount": "28.00"}]


def test_whole_months_cost_the_monthly_price():
    found = transit_bill("2024-01-01", "2024-03-31", "19.99", free_days=0)
    assert [item["amount"] for item in found["days"]] == ["19.99", "19.99", "19.99"]
    assert found["amount"] == "59.97"
    assert found["billable_days"] == 31 + 29 + 31


def test_rounding_is_half_up_to_cents():
    # 0.31 * 15 / 30 = 0.155 exactly: half-up gives 0.16 where binary floats or half-even would give 0.15.
    found = transit_bill("2024-04-01", "2024-04-15", "0.31", free_days=0, currency="CHF")
    assert found["amount"] == "0.16"
    assert found["currency"] == "CHF"
    assert Decimal("0.155").quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) == Decimal("0.16")


def test_a_float_price_is_taken_at_its_decimal_value():
    assert transit_bill("2024-04-01", "2024-04-30", 0.1, free_days=0)["amount"] == "0.10"


def test_datetime_counts_as_its_day():
    found = transit_bill(datetime(2024, 2, 10, 23, 59), "2024-03-05", 29.9)
    assert found["delivered"] == "2024-02-10"
    assert found["amount"] == "11.01"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("2024-03-05", "2024-03-04", 10), {}, r"finished \(2024-03-04\) is before delivered \(2024-03-05\)"),
        (("2024-02-30", "2024-03-04", 10), {}, "delivered '2024-02-30' is not a valid date"),
        (("05/03/2024", "2024-03-04", 10), {}, "delivered must be a 'YYYY-MM-DD' string or a date"),
        (("2024-03-01", 20240304, 10), {}, "finished must be a 'YYYY-MM-DD' string or a date"),
        (("2024-03-01", "2024-03-04", -1), {}, "monthly_price must be a finite number >= 0"),
        (("2024-03-01", "2024-03-04", "ten"), {}, "monthly_price must be a number"),
        (("2024-03-01", "2024-03-04", "Infinity"), {}, "must be a finite number"),
        (("2024-03-01", "2024-03-04", None), {}, "monthly_price must be a number"),
        (("2024-03-01", "2024-03-04", 10), {"free_days": -1}, "free_days must not be negative"),
        (("2024-03-01", "2024-03-04", 10), {"free_days": "14"}, "free_days must be an integer"),
        (("2024-03-01", "2024-03-04", 10), {"currency": "euro"}, "currency must be an ISO 4217 code"),
    ],
)
def test_bad_input_is_refused(args, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        transit_bill(*args, **kwargs)


def test_registered_under_its_name():
    assert FilterModule().filters() == {"transit_bill": transit_bill}
