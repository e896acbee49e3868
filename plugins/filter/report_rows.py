# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""report_rows: one row per account for the final report (step 8): sizes, downtime of the move to the transit
server (step 4) and back (step 7), and whether both moves were verified."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.downtime_estimate import non_negative_int, non_negative_number
from ansible_collections.hosting.migration.plugins.filter.select_accounts import account_list
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

STEPS = ("step4", "step7")


def _optional(value: Any, check: Any, what: str) -> Any:
    return None if value is None else check(value, f"report_rows: {what}")


def _domains(account: dict[str, Any]) -> list[str] | None:
    """Domain names, from strings or from registry entries {name, provider_dns}."""
    domains = account.get("domains")
    if domains is None:
        return None
    if not isinstance(domains, list):
        raise AnsibleFilterError(f"report_rows: domains of {account['name']} must be a list, got {domains!r}")
    names = []
    for domain in domains:
        name = domain.get("name") if isinstance(domain, dict) else domain
        if not isinstance(name, str):
            raise AnsibleFilterError(f"report_rows: a domain of {account['name']} has no name: {domain!r}")
        names.append(name)
    return names


def _move(name: str, moves: dict[str, Any], step: str) -> tuple[float | None, bool | None]:
    """(downtime_s, verified) of one account's step, None where unknown."""
    result = (moves.get(name) or {}).get(step)
    if result is None:
        return None, None
    if not isinstance(result, dict):
        raise AnsibleFilterError(f"report_rows: moves[{name}][{step}] must be a dict, got {result!r}")
    verified = result.get("verified")
    if verified is not None and not isinstance(verified, bool):
        raise AnsibleFilterError(f"report_rows: moves[{name}][{step}].verified must be a boolean, got {verified!r}")
    return _optional(result.get("downtime_s"), non_negative_number, f"moves[{name}][{step}].downtime_s"), verified


def _both(first: bool | None, second: bool | None) -> bool | None:
    """False if either move failed verification, True if both passed, None while either is unknown."""
    if first is False or second is False:
        return False
    return True if first and second else None


def report_rows(accounts: Any, moves: Any) -> list[dict[str, Any]]:
    """One row per account of `accounts` or `moves`, sorted by name; every value it cannot know is None."""
    items = {account["name"]: account for account in account_list(accounts, "report_rows")}
    if moves is None:
        moves = {}
    if not isinstance(moves, dict):
        raise AnsibleFilterError(f"report_rows: moves must be a dict of account name to steps, got {moves!r}")
    for name, steps in moves.items():
        try:
            validate_account_name(name)
        except ValueError as error:
            raise AnsibleFilterError(f"report_rows: moves: {error}") from None
        if steps is not None and not isinstance(steps, dict):
            raise AnsibleFilterError(f"report_rows: moves[{name}] must be a dict of steps, got {steps!r}")
    rows = []
    for name in sorted(set(items) | set(moves)):
        account = items.get(name, {"name": name})
        (downtime4, verified4), (downtime7, verified7) = (_move(name, moves, step) for step in STEPS)
        rows.append(
            {
                "account": name,
                "domains": _domains(account),
                "files_bytes": _optional(account.get("size_bytes"), non_negative_int, f"size_bytes of {name}"),
                "db_bytes": _optional(account.get("db_bytes"), non_negative_int, f"db_bytes of {name}"),
                "downtime_step4_s": downtime4,
                "downtime_step7_s": downtime7,
                "verified_step4": verified4,
                "verified_step7": verified7,
                "verified": _both(verified4, verified7),
            }
        )
    return rows


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"report_rows": report_rows}
