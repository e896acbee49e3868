# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""unsupported_languages: the language versions sites use that an architecture does not support, with the version
that replaces each, judged by the support matrix and replacement rules of module_utils/langs.py."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.module_utils import langs
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name, validate_domain


def _site(index: int, site: Any) -> tuple[str, str, str | None, str | None]:
    if not isinstance(site, dict):
        raise AnsibleFilterError(f"unsupported_languages: sites[{index}] must be a dict, got {site!r}")
    version = site.get("version")
    # A YAML version written unquoted arrives as a number (7.4); registry files are read the same way (langs.py).
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)
    try:
        language = langs.validate_language(site.get("language"))
        version = langs.validate_version(version)
        account = None if site.get("account") is None else validate_account_name(site["account"])
        domain = None if site.get("domain") is None else validate_domain(site["domain"])
    except (langs.LangError, ValueError) as error:
        raise AnsibleFilterError(f"unsupported_languages: sites[{index}]: {error}") from None
    return language, version, account, domain


def unsupported_languages(sites: Any, architecture: Any, matrix: Any = None) -> list[dict[str, Any]]:
    """One entry per (language, version) used by `sites` that `architecture` does not support: language, version,
    replacement (None when the architecture supports no version of the language), and the sorted, distinct
    accounts and domains of the sites using it. Sorted by language, then version."""
    if not isinstance(sites, list):
        raise AnsibleFilterError(f"unsupported_languages: sites must be a list of dicts, got {sites!r}")
    if matrix is not None and not isinstance(matrix, dict):
        raise AnsibleFilterError(f"unsupported_languages: matrix must be a dict of architectures, got {matrix!r}")
    if isinstance(architecture, int) and not isinstance(architecture, bool):
        architecture = str(architecture)  # `architecture: 2024` unquoted in YAML
    try:
        support = langs.load_matrix(architecture, matrix)
    except langs.LangError as error:
        raise AnsibleFilterError(f"unsupported_languages: {error}") from None
    users: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    for index, site in enumerate(sites):
        language, version, account, domain = _site(index, site)
        if langs.is_supported(language, version, support):
            continue
        accounts, domains = users.setdefault((language, version), (set(), set()))
        accounts.update([account] if account else [])
        domains.update([domain] if domain else [])
    return [
        {
            "language": language,
            "version": version,
            "replacement": langs.replacement_for(language, version, support),
            "accounts": sorted(accounts),
            "domains": sorted(domains),
        }
        for (language, version), (accounts, domains) in sorted(
            users.items(), key=lambda item: (item[0][0], langs.version_key(item[0][1]))
        )
    ]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"unsupported_languages": unsupported_languages}
