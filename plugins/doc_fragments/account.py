# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The `account` option; its argument spec is account_argument_spec() in module_utils/account.py.
    DOCUMENTATION = r"""
options:
  account:
    description:
      - Name of the hosting account to act on.
      - It must match C(^[a-z][a-z0-9]{1,31}$) (2 to 32 characters, lowercase letters and digits, starting with
        a letter). Any other value is refused before anything is read or changed.
      - The name selects the account's registry file (C(/etc/hosting/accounts/<account>.yml) by default), its home,
        its mail, and its databases (C(<account>_*)) and database users.
    type: str
    required: true
"""
