#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: db_login_check
short_description: Tell whether an account's database users can log in on this server, without their passwords
version_added: 0.1.0
description:
  - Step 5 (and step 1) of the migration. For every MariaDB user (C(<account>), C(<account>_*)) and every PostgreSQL
    login role of the account on this server, checks what decides whether its owner can still log in - it exists,
    is not locked or expired, has a password, its authentication plugin is active, and (PostgreSQL) the method
    pg_hba.conf applies to TCP connections accepts the kind of password hash the role has.
  - The trap it exists for - roles carried with C(md5) hashes to a server whose pg_hba.conf requires
    C(scram-sha-256) look right and can never log in again. With O(pg_auth_method) the check judges against the
    new architecture's method instead of this server's, so step 1 finds them while their owners can still fix them.
  - Read-only; it never changes anything.
extends_documentation_fragment:
  - hosting.migration.account
options:
  mariadb:
    description: Admin endpoint of this server's MariaDB/MySQL; omit if it has none.
    type: dict
    suboptions: &db_suboptions
      host:
        description: Host name or address.
        type: str
        required: true
      port:
        description: TCP port.
        type: int
      user:
        description: Administrative user.
        type: str
        required: true
      password:
        description: Its password; never logged or returned.
        type: str
        required: true
  postgresql:
    description: Admin endpoint (a superuser, to read pg_authid and pg_hba_file_rules) of this server's PostgreSQL.
    type: dict
    suboptions: *db_suboptions
  pg_auth_method:
    description:
      - V(server) judges PostgreSQL roles by this server's own pg_hba.conf.
      - Any other value judges them as if TCP logins used that method (step 1 passes the new architecture's).
    type: str
    choices: [server, md5, scram-sha-256, password]
    default: server
  client_address:
    description:
      - The address the account's applications connect to PostgreSQL from; the pg_hba.conf rule that applies to it
        decides (the default, C(127.0.0.1), is a site on the server itself).
    type: str
    default: 127.0.0.1
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; check mode runs the same queries.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
    details: Always C(changed=false).
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - PyMySQL for MariaDB; psycopg2 for PostgreSQL
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Can bob's users still log in here?
  hosting.migration.db_login_check:
    account: bob
    postgresql: {host: 127.0.0.1, user: hosting_admin, password: "{{ vault_db_admin_password }}"}
  register: logins

- name: Step 1 - would they log in on the new architecture (SCRAM only)?
  hosting.migration.db_login_check:
    account: bob
    postgresql: {host: 127.0.0.1, user: hosting_admin, password: "{{ vault_db_admin_password }}"}
    pg_auth_method: scram-sha-256
"""

RETURN = r"""
users:
  description: One entry per database user or login role of the account.
  returned: always
  type: list
  elements: dict
  sample:
    - {engine: postgresql, user: bob, method: scram-sha-256, password_kind: md5, can_login: false,
       problems: ["its password hash is md5 but the server requires scram-sha-256: ..."]}
    - {engine: mariadb, user: alice@%, plugin: mysql_native_password, can_login: true, problems: []}
ok:
  description: Whether every user can log in.
  returned: always
  type: bool
problems:
  description: One line per user that cannot log in, saying why.
  returned: always
  type: list
  elements: str
"""

import ipaddress

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import db_logins, dbcopy, mariadb, postgres
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

ENGINES = {"mariadb": (mariadb, db_logins.mariadb_logins), "postgresql": (postgres, db_logins.postgresql_logins)}
DB_OPTIONS = dbcopy.endpoint_options()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "account": {"type": "str", "required": True},
            "mariadb": {"type": "dict", "options": DB_OPTIONS},
            "postgresql": {"type": "dict", "options": DB_OPTIONS},
            "pg_auth_method": {
                "type": "str",
                "choices": ["server", "md5", "scram-sha-256", "password"],
                "default": "server",
            },
            "client_address": {"type": "str", "default": "127.0.0.1"},
        },
        supports_check_mode=True,
    )
    try:
        account = validate_account_name(module.params["account"])
        client = str(ipaddress.ip_address(module.params["client_address"]))
    except ValueError as error:
        module.fail_json(msg=str(error))
    users = []
    for engine in ("mariadb", "postgresql"):
        options = module.params[engine]
        if not options:
            continue
        lib, check = ENGINES[engine]
        if not lib.HAS_DRIVER:
            module.fail_json(msg=missing_required_lib(lib.DRIVER_NAME), exception=lib.DRIVER_IMPORT_ERROR)
        try:
            endpoint = lib.endpoint(options["host"], options["user"], options["password"], options["port"])
            conn = lib.connect(endpoint)
            try:
                extra = (module.params["pg_auth_method"], client) if engine == "postgresql" else ()
                users += check(conn, account, *extra)
            finally:
                conn.close()
        except Exception as error:  # noqa: BLE001 - the driver's errors; the message names the engine and host
            module.fail_json(msg=f"{engine} on {options['host']}: cannot check the logins of {account}: {error}")
    problems = [f"{u['engine']} {u['user']}: {'; '.join(u['problems'])}" for u in users if u["problems"]]
    module.exit_json(changed=False, users=users, ok=not problems, problems=problems)


if __name__ == "__main__":
    main()
