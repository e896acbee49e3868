# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""select_accounts: which accounts a play works on, from `-e accounts=...`: 'all', a comma-separated list of names,
or a JMESPath expression over the list of accounts. Also the account list shape shared with report_rows."""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

try:
    import jmespath
    import jmespath.exceptions
except ImportError:
    HAS_JMESPATH = False
else:
    HAS_JMESPATH = True

# Only name characters, commas and blanks: a list of names. No useful JMESPath expression over a list looks like
# this (a bare field name of a list is null), so such a query is read as names and each name is validated.
_NAMES_RE = re.compile(r"[\w\s,.-]+")


def account_list(accounts: Any, caller: str) -> list[dict[str, Any]]:
    """`accounts` as a list of dicts each with a valid `name`: a list is checked as it is, a dict name -> dict
    becomes a list in its order with `name` added. AnsibleFilterError naming `caller` on anything else."""
    if isinstance(accounts, dict):
        items = []
        for name, account in accounts.items():
            if not isinstance(account, dict):
                raise AnsibleFilterError(f"{caller}: account {name!r} must be a dict, got {account!r}")
            if account.get("name", name) != name:
                raise AnsibleFilterError(f"{caller}: account {name!r} names another account ({account['name']!r})")
            items.append({**account, "name": name})
    elif isinstance(accounts, list):
        items = accounts
    else:
        raise AnsibleFilterError(
            f"{caller}: accounts must be a list of dicts or a dict of name to dict, got {accounts!r}"
        )
    seen = set()
    for index, account in enumerate(items):
        if not isinstance(account, dict):
            raise AnsibleFilterError(f"{caller}: accounts[{index}] must be a dict, got {account!r}")
        try:
            name = validate_account_name(account.get("name"))
        except ValueError as error:
            raise AnsibleFilterError(f"{caller}: accounts[{index}]: {error}") from None
        if name in seen:
            raise AnsibleFilterError(f"{caller}: account {name} is listed twice")
        seen.add(name)
    return items


def _plain(value: Any) -> Any:
    """A copy built of exact dict, list, str, int, float, bool and None: jmespath's functions check types by their
    exact class names, which Ansible's tagged and lazy subclasses would fail."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    for kind in (bool, str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def _by_names(items: list[dict[str, Any]], query: str) -> list[str]:
    known = [account["name"] for account in items]
    names: list[str] = []
    for part in query.split(","):
        name = part.strip()
        try:
            validate_account_name(name)
        except ValueError as error:
            raise AnsibleFilterError(f"select_accounts: query {query!r}: {error}") from None
        if name not in names:
            names.append(name)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise AnsibleFilterError(
            f"select_accounts: unknown account(s) {', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})"
        )
    return names


def select_accounts(accounts: Any, query: Any) -> Any:
    """'all': every account's name; 'alice,bob': those names, each checked to exist; anything else: the result of
    the JMESPath expression evaluated against the list of accounts."""
    items = account_list(accounts, "select_accounts")
    if not isinstance(query, str) or not query.strip():
        raise AnsibleFilterError(f"select_accounts: query must be a non-empty string, got {query!r}")
    if query.strip() == "all":
        return [account["name"] for account in items]
    if _NAMES_RE.fullmatch(query):
        return _by_names(items, query)
    if not HAS_JMESPATH:
        raise AnsibleFilterError("select_accounts: the jmespath Python library is required for query expressions")
    try:
        return jmespath.search(str(query), _plain(items))
    except jmespath.exceptions.ParseError as error:  # LexerError and IncompleteExpressionError included
        raise AnsibleFilterError(f"select_accounts: invalid JMESPath expression {query!r}: {error}") from None
    except jmespath.exceptions.JMESPathError as error:
        raise AnsibleFilterError(f"select_accounts: JMESPath expression {query!r} failed: {error}") from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"select_accounts": select_accounts}
