# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""transit_bill: what the transit server costs. It is free for `free_days` days from its delivery (the delivery
day is day 1), then each further day up to and including the finish day costs the client server's monthly price
divided by the number of days of the calendar month that day falls in."""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.downtime_estimate import non_negative_int

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
CENT = Decimal("0.01")


def _day(value: Any, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()  # its own calendar day (a date and time from now() or a fact)
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(str(value))
        except ValueError as error:
            raise AnsibleFilterError(f"transit_bill: {what} {value!r} is not a valid date: {error}") from None
    raise AnsibleFilterError(f"transit_bill: {what} must be a 'YYYY-MM-DD' string or a date, got {value!r}")


def _price(value: Any) -> Decimal:
    # str() first: Decimal(0.1) would carry the float's binary error into the bill.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise AnsibleFilterError(f"transit_bill: monthly_price must be a number, got {value!r}")
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise AnsibleFilterError(f"transit_bill: monthly_price must be a number, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise AnsibleFilterError(f"transit_bill: monthly_price must be a finite number >= 0, got {value!r}")
    return price


def _cents(amount: Decimal) -> str:
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def billed_months(first: date, last: date) -> list[tuple[int, int, int]]:
    """(year, month, billed days) of each calendar month from `first` to `last`, both included."""
    months = []
    day = first
    while day <= last:
        month_end = date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])
        until = min(month_end, last)
        months.append((day.year, day.month, (until - day).days + 1))
        day = until + timedelta(days=1)
    return months


def transit_bill(
    delivered: Any, finished: Any, monthly_price: Any, free_days: Any = 14, currency: Any = "EUR"
) -> dict[str, Any]:
    """The transit server's bill from its delivery to the finish day (both included); amounts are strings in cents,
    rounded half-up per month, and the total is the sum of the months' amounts."""
    start = _day(delivered, "delivered")
    end = _day(finished, "finished")
    if end < start:
        raise AnsibleFilterError(
            f"transit_bill: finished ({end.isoformat()}) is before delivered ({start.isoformat()})"
        )
    price = _price(monthly_price)
    free = non_negative_int(free_days, "transit_bill: free_days")
    if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency):
        raise AnsibleFilterError(f"transit_bill: currency must be an ISO 4217 code such as 'EUR', got {currency!r}")
    free_until = start + timedelta(days=free - 1)
    breakdown = []
    with localcontext(Context(prec=34)):
        for year, month, days in billed_months(free_until + timedelta(days=1), end):
            amount = price * days / calendar.monthrange(year, month)[1]
            breakdown.append({"month": f"{year:04d}-{month:02d}", "days": days, "amount": _cents(amount)})
    return {
        "delivered": start.isoformat(),
        "finished": end.isoformat(),
        "free_until": free_until.isoformat(),
        "billable_days": sum(item["days"] for item in breakdown),
        "amount": _cents(sum((Decimal(item["amount"]) for item in breakdown), Decimal(0))),
        "currency": str(currency),
        "days": breakdown,
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"transit_bill": transit_bill}
