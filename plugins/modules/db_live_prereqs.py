#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: db_live_prereqs
short_description: Give this server's PostgreSQL or MariaDB what live account moves need, in one announced restart
version_added: 0.1.0
description:
  - The live database method of M(hosting.migration.account_move) replicates an account's databases from the
    source server while the account runs. PostgreSQL needs C(wal_level=logical) and enough replication slots and WAL
    senders; MariaDB needs its binary log on, in ROW format, and a C(server_id) apart from the other server's. A
    binary log or a WAL level takes effect only when the server restarts.
  - Step 1 runs this module in check mode on the client server to report whether live moves are ready, and what
    the restart would change. Step 3 runs it for real on the client and the transit server (the latter is the
    source of the moves back in step 7 and of rollbacks; the destination's own log lets the freeze's verification
    tell changes made there); the restart is the only downtime of the set-up, and it is measured and returned.
  - One engine per run (O(postgresql) or O(mariadb)). PostgreSQL's settings are written with C(ALTER SYSTEM)
    (C(postgresql.auto.conf)); MariaDB's in the option file O(config_file), with C(binlog_format) and C(server_id)
    also set at once (they need no restart). Settings that already satisfy the need are left alone, and nothing
    restarts when nothing needs it.
options:
  postgresql:
    description: Admin endpoint (a superuser) of this server's PostgreSQL.
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
  mariadb:
    description: Admin endpoint (with SUPER or the binary log and replication privileges) of this server's MariaDB.
    type: dict
    suboptions: *db_suboptions
  replication_slots:
    description:
      - PostgreSQL - replication slots and WAL senders to provide at least - per account database moving at once, two
        slots (its replication and its verification's decoding) and one sender, plus two of each for the initial sync.
    type: int
    default: 16
  server_id:
    description:
      - MariaDB - the C(server_id) this server runs with; the client's and the transit's must differ.
      - Default, one derived from this machine's host name (1 + the first 28 bits of its SHA-1).
    type: int
  config_file:
    description: MariaDB - the option file written (in a directory the server reads at start).
    type: path
    default: /etc/mysql/mariadb.conf.d/90-hosting-migration.cnf
  restart_command:
    description:
      - The command (an argument list, run on this server) that restarts the database server.
      - Default C([systemctl, restart, postgresql]) or C([systemctl, restart, mariadb]).
    type: list
    elements: str
  restart_timeout:
    description: Seconds to wait, after the restart command, for the server to accept connections again.
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
  - psycopg2 (PostgreSQL)
  - PyMySQL (MariaDB)
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

- name: Step 3 - the same for MariaDB (binary log on, ROW format, this server's server_id)
  hosting.migration.db_live_prereqs:
    mariadb: {host: 127.0.0.1, user: hosting_admin, password: "{{ vault_db_admin_password }}"}
    server_id: 2
    restart_command: [systemctl, restart, mariadb]
"""

RETURN = r"""
engine:
  description: The engine this run looked at.
  returned: always
  type: str
  sample: postgresql
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
  description: Whether the server has to restart (in check mode, would restart) for live moves to work.
  returned: always
  type: bool
restart_downtime_s:
  description: Seconds from the restart command until the server accepted connections again with the new values.
  returned: when the server was restarted
  type: float
  sample: 1.8
"""

import hashlib
import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy, mariadb, postgres
from ansible_collections.hosting.migration.plugins.module_utils.mariadb_live import (
    binlog_config,
    binlog_settings,
    missing_binlog_settings,
)
from ansible_collections.hosting.migration.plugins.module_utils.pg_live import live_settings, missing_settings

RESTART_COMMANDS = {
    "postgresql": ["systemctl", "restart", "postgresql"],
    "mariadb": ["systemctl", "restart", "mariadb"],
}
NAMES = {"postgresql": "PostgreSQL", "mariadb": "MariaDB"}


def derived_server_id(hostname: str) -> int:
    """A server_id from the host name: two servers' differ unless their names do not (1 in 2**28 otherwise)."""
    return 1 + int(hashlib.sha1(hostname.encode()).hexdigest()[:7], 16)  # noqa: S324 - not a security use


class Server:
    """One engine's settings on this server: read, plan, write, check after the restart."""

    def __init__(self, module: AnsibleModule, engine: str) -> None:
        self.module, self.engine, self.params = module, engine, module.params
        lib = postgres if engine == "postgresql" else mariadb
        if not lib.HAS_DRIVER:
            module.fail_json(msg=missing_required_lib(lib.DRIVER_NAME), exception=lib.DRIVER_IMPORT_ERROR)
        self.lib = lib
        options = self.params[engine]
        self.host = options["host"]
        self.endpoint = lib.endpoint(options["host"], options["user"], options["password"], options["port"])

    def read(self) -> dict:
        conn = self.lib.connect(self.endpoint)
        try:
            return live_settings(conn) if self.engine == "postgresql" else binlog_settings(conn)
        finally:
            conn.close()

    def missing(self, settings: dict) -> dict:
        if self.engine == "postgresql":
            return missing_settings(settings, self.params["replication_slots"])
        return missing_binlog_settings(settings, self.params["server_id"])

    def needs_restart(self, changes: dict) -> bool:
        # PostgreSQL's settings all wait for a restart; MariaDB's binlog_format and server_id are dynamic.
        return bool(changes) if self.engine == "postgresql" else "log_bin" in changes

    def file_text(self, before: dict) -> tuple[str | None, str]:
        """MariaDB: the option file now (None: none) and as it should be (keeping a binary log it turned on)."""
        path = self.params["config_file"]
        try:
            with open(path, encoding="utf-8") as handle:
                current: str | None = handle.read()
        except FileNotFoundError:
            current = None
        turns_on = not before["log_bin"] or (current is not None and "\nlog_bin = " in current)
        return current, binlog_config(self.params["server_id"], turns_on)

    def write(self, changes: dict, config: str | None) -> None:
        conn = self.lib.connect(self.endpoint)
        try:
            if self.engine == "postgresql":
                for name, value in changes.items():
                    postgres.alter_system(conn, name, value)
                return
            path = self.params["config_file"]
            temporary = f"{path}.hosting-migration.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(config or "")
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
            if "binlog_format" in changes:
                mariadb._query(conn, "SET GLOBAL binlog_format = 'ROW'")
            if "server_id" in changes:
                mariadb._query(conn, "SET GLOBAL server_id = %s", (int(changes["server_id"]),))
        finally:
            conn.close()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "postgresql": {"type": "dict", "options": dbcopy.endpoint_options()},
            "mariadb": {"type": "dict", "options": dbcopy.endpoint_options()},
            "replication_slots": {"type": "int", "default": 16},
            "server_id": {"type": "int"},
            "config_file": {"type": "path", "default": "/etc/mysql/mariadb.conf.d/90-hosting-migration.cnf"},
            "restart_command": {"type": "list", "elements": "str"},
            "restart_timeout": {"type": "int", "default": 120},
        },
        required_one_of=[("postgresql", "mariadb")],
        mutually_exclusive=[("postgresql", "mariadb")],
        supports_check_mode=True,
    )
    params = module.params
    engine = "postgresql" if params["postgresql"] else "mariadb"
    name = NAMES[engine]
    if not 1 <= params["replication_slots"] <= 1000:
        module.fail_json(msg=f"replication_slots must be between 1 and 1000, got {params['replication_slots']}")
    if engine == "mariadb" and params["server_id"] is None:
        params["server_id"] = derived_server_id(socket.gethostname())
    if engine == "mariadb" and not 1 <= params["server_id"] <= 4294967295:
        module.fail_json(msg=f"server_id must be between 1 and 4294967295, got {params['server_id']}")
    restart_command = RESTART_COMMANDS[engine] if params["restart_command"] is None else params["restart_command"]
    if not restart_command:
        module.fail_json(msg="restart_command must name a command")
    server = Server(module, engine)
    try:
        before = server.read()
    except Exception as error:  # noqa: BLE001 - the driver's errors; the message names the server
        module.fail_json(msg=f"{name} on {server.host}: cannot read its settings: {error}")
    changes = server.missing(before)
    restart = server.needs_restart(changes)
    result = {
        "changed": bool(changes),
        "engine": engine,
        "before": before,
        "changes": changes,
        "restart_needed": restart,
    }
    current, config = server.file_text(before) if engine == "mariadb" else (None, None)
    if module._diff:
        result["diff"] = {"before": before, "after": {**before, **changes}}
        if engine == "mariadb" and changes:
            result["diff"] = [result["diff"], {"before_header": params["config_file"], "before": current or "",
                                               "after_header": params["config_file"], "after": config}]  # fmt: skip
    if not changes or module.check_mode:
        module.exit_json(**result)
    try:
        server.write(changes, config)
    except Exception as error:  # noqa: BLE001
        module.fail_json(msg=f"{name} on {server.host}: writing the settings failed: {error}", **result)
    if not restart:
        module.exit_json(**result)
    started = time.monotonic()
    rc, out, err = module.run_command(restart_command)
    if rc != 0:
        module.fail_json(
            msg=f"the restart command failed (exit {rc}): {(err or out).strip()[-500:]}; the new settings are "
            f"written and take effect at {name}'s next restart",
            **result,
        )
    deadline = started + params["restart_timeout"]
    while True:
        try:
            after = server.read()
        except Exception as error:  # noqa: BLE001 - still starting
            if time.monotonic() > deadline:
                module.fail_json(
                    msg=f"{name} on {server.host} did not accept connections within {params['restart_timeout']} s "
                    f"of its restart: {error}",
                    **result,
                )
            time.sleep(0.1)
            continue
        break
    result["restart_downtime_s"] = round(time.monotonic() - started, 3)
    left = server.missing(after)
    if left:
        module.fail_json(msg=f"{name} restarted but still runs with {left} unmet", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
