#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: db_live_prereqs
short_description: Give this server's PostgreSQL what live account moves need, in one announced restart
version_added: 0.1.0
description:
  - The live database method of M(hosting.migration.account_move) replicates an account's PostgreSQL databases
    from the source server while the account runs. The source server needs C(wal_level=logical) and enough
    replication slots and WAL senders; these take effect only when PostgreSQL restarts.
  - Step 1 runs this module in check mode on the client server to report whether live moves are ready, and what
    the restart would change. Step 3 runs it for real on the client and the transit server (the latter is the
    source of the moves back in step 7 and of rollbacks); the restart is the only downtime of the set-up, and it
    is measured and returned.
  - The settings are written with C(ALTER SYSTEM) (C(postgresql.auto.conf)); settings that already satisfy the
    need are left alone, and nothing restarts when nothing changed.
options:
  postgresql:
    description: Admin endpoint (a superuser) of this server's PostgreSQL.
    type: dict
    required: true
    suboptions:
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
  replication_slots:
    description:
      - Replication slots and WAL senders to provide at least - per account database moving at once, two slots
        (its replication and its verification's decoding) and one sender, plus two of each for the initial sync.
    type: int
    default: 16
  restart_command:
    description: The command (an argument list, run on this server) that restarts PostgreSQL.
    type: list
    elements: str
    default: [systemctl, restart, postgresql]
  restart_timeout:
    description: Seconds to wait, after the restart command, for PostgreSQL to accept connections again.
    type: int
    default: 120
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports the settings it would change and whether a restart would follow; changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - psycopg2
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Step 1 - are live moves ready on the client server?
  hosting.migration.db_live_prereqs:
    postgresql: {host: 127.0.0.1, user: hosting_admin, password: "{{ vault_db_admin_password }}"}
  check_mode: true
  register: live_ready

- name: Step 3 - set them up (one restart of PostgreSQL, announced beforehand)
  hosting.migration.db_live_prereqs:
    postgresql: {host: 127.0.0.1, user: hosting_admin, password: "{{ vault_db_admin_password }}"}
    restart_command: [pg_ctlcluster, "15", main, restart]
"""

RETURN = r"""
before:
  description: The running values of the settings live moves depend on.
  returned: always
  type: dict
  sample: {wal_level: replica, max_replication_slots: 10, max_wal_senders: 10}
changes:
  description: The settings that were (in check mode, would be) changed, with their new values.
  returned: always
  type: dict
  sample: {wal_level: logical, max_replication_slots: 16, max_wal_senders: 16}
restart_needed:
  description: Whether PostgreSQL has to restart (in check mode, would restart) for live moves to work.
  returned: always
  type: bool
restart_downtime_s:
  description: Seconds from the restart command until PostgreSQL accepted connections again with the new values.
  returned: when PostgreSQL was restarted
  type: float
  sample: 1.8
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy, postgres
from ansible_collections.hosting.migration.plugins.module_utils.pg_live import live_settings, missing_settings


def connect(endpoint):
    conn = postgres.connect(endpoint)
    try:
        return live_settings(conn), conn
    except Exception:
        conn.close()
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "postgresql": {"type": "dict", "required": True, "options": dbcopy.endpoint_options()},
            "replication_slots": {"type": "int", "default": 16},
            "restart_command": {"type": "list", "elements": "str", "default": ["systemctl", "restart", "postgresql"]},
            "restart_timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    params = module.params
    if not postgres.HAS_DRIVER:
        module.fail_json(msg=missing_required_lib(postgres.DRIVER_NAME), exception=postgres.DRIVER_IMPORT_ERROR)
    if not 1 <= params["replication_slots"] <= 1000:
        module.fail_json(msg=f"replication_slots must be between 1 and 1000, got {params['replication_slots']}")
    if not params["restart_command"]:
        module.fail_json(msg="restart_command must name a command")
    options = params["postgresql"]
    endpoint = postgres.endpoint(options["host"], options["user"], options["password"], options["port"])
    try:
        before, conn = connect(endpoint)
    except Exception as error:  # noqa: BLE001 - the driver's errors; the message names the server
        module.fail_json(msg=f"PostgreSQL on {options['host']}: cannot read its settings: {error}")
    changes = missing_settings(before, params["replication_slots"])
    result = {"changed": bool(changes), "before": before, "changes": changes, "restart_needed": bool(changes)}
    if module._diff:
        result["diff"] = {"before": before, "after": {**before, **changes}}
    if not changes or module.check_mode:
        conn.close()
        module.exit_json(**result)
    try:
        for name, value in changes.items():
            postgres.alter_system(conn, name, value)
    except Exception as error:  # noqa: BLE001
        module.fail_json(msg=f"PostgreSQL on {options['host']}: ALTER SYSTEM failed: {error}", **result)
    finally:
        conn.close()
    started = time.monotonic()
    rc, out, err = module.run_command(params["restart_command"])
    if rc != 0:
        module.fail_json(
            msg=f"the restart command failed (exit {rc}): {(err or out).strip()[-500:]}; the new settings are "
            "written and take effect at PostgreSQL's next restart",
            **result,
        )
    deadline = started + params["restart_timeout"]
    while True:
        try:
            after, conn = connect(endpoint)
            conn.close()
        except Exception as error:  # noqa: BLE001 - still starting
            if time.monotonic() > deadline:
                module.fail_json(
                    msg=f"PostgreSQL on {options['host']} did not accept connections within "
                    f"{params['restart_timeout']} s of its restart: {error}",
                    **result,
                )
            time.sleep(0.1)
            continue
        break
    result["restart_downtime_s"] = round(time.monotonic() - started, 3)
    left = missing_settings(after, params["replication_slots"])
    if left:
        module.fail_json(msg=f"PostgreSQL restarted but still runs with {left} unmet", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
