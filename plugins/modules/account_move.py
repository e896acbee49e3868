#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: account_move
short_description: Move one hosting account to this server in seconds of downtime, verified and reversible
version_added: 0.1.0
description:
  - Runs on the destination server and pulls the account from the source server, in phases, each timed -
    pre-check, lock, pre-copy (live), freeze, final delta, databases, verify, switch, unfreeze, journal.
  - Files and Maildirs travel with rsync over SSH (C(-aHAX --numeric-ids)); MariaDB and PostgreSQL databases
    C(<account>_*) with their users, password hashes and grants are streamed from server to server, and the
    account's registry file follows.
  - The account's Unix user travels whole - uid, gid, home, shell, GECOS, password hash and every shadow aging
    field (the hash on C(chpasswd -e)'s standard input, never on a command line), supplementary groups (created
    here with the source's gid where missing) - and so does its crontab (content, mode, owner). The user is
    created at the pre-copy with its logins held; the final delta copies it again, with the crontab and the login
    hold's saved expiry date, beside the source's held copies; the unfreeze installs the crontab and gives the
    user its expiry back. The side the account leaves keeps its crontab aside for a rollback.
  - Before the switch every file (content hash, mode, owner, ACLs, xattrs, hard links), every table (row count
    and an order-independent content hash computed on both servers), the Unix user (passwd, shadow and groups)
    and the crontab are compared. Any difference fails the move
    before the switch and thaws the source, so the account stays served by it.
  - The freeze puts the account's domains on the maintenance page, takes write access from its database users,
    holds its mail delivery and crontab, expires its system user (no new ssh, sftp, su or cron login) and ends its
    processes. The side the account leaves stays frozen; the side it arrives on is thawed.
  - The switch edits the nginx map of the server that holds the public IPs (the I(front)); DNS is not touched.
  - If the module is killed while the account is frozen, a guardian process thaws the source; killed after the
    switch, the guardian finishes the unfreeze on this server instead. A re-run converges (one whose previous
    attempt switched but did not finish its unfreeze only finishes it).
  - O(state=rolled_back) brings an account back to this server, its original home, from the server that serves it
    now, after checking that nothing changed here since the switch (a conflict fails unless O(force=true)). It is
    refused unless this server's journal says the account lives on O(source).
extends_documentation_fragment:
  - hosting.migration.account
options:
  state:
    description:
      - V(moved) makes this server the account's home, pulling from O(source).
      - V(rolled_back) brings a moved account back to this server (where the journal says it came from).
    type: str
    choices: [moved, rolled_back]
    default: moved
  source:
    description: The server the account is pulled from, as this server reaches it.
    type: dict
    required: true
    suboptions:
      host:
        description: Address of the source for SSH (rsync, remote steps).
        type: str
        required: true
      name:
        description: Name recorded in the journal (the inventory hostname); defaults to O(source.host).
        type: str
      ssh_user:
        description: SSH user on the source.
        type: str
        default: root
      ssh_port:
        description: SSH port of the source.
        type: int
        default: 22
      ssh_key_file:
        description: Private key this server uses to reach the source.
        type: path
      known_hosts_file:
        description: Known-hosts file holding the source's host key (host keys are always checked).
        type: path
      mariadb:
        description: Admin endpoint of the source's MariaDB/MySQL; omit if the source has none.
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
            description: Its password. Travels in a 0600 defaults/pass file, never on a command line.
            type: str
            required: true
      postgresql:
        description: Admin endpoint of the source's PostgreSQL; omit if the source has none.
        type: dict
        suboptions: *db_suboptions
  destination:
    description: This server.
    type: dict
    required: true
    suboptions:
      name:
        description: Name recorded in the journal (the inventory hostname).
        type: str
        required: true
      http_backend:
        description:
          - C(address:port) where the front proxies this server's accounts to (C([v6]:port) for IPv6).
          - Required when O(front=source).
        type: str
      mariadb:
        description: Admin endpoint of this server's MariaDB/MySQL.
        type: dict
        suboptions: *db_suboptions
      postgresql:
        description: Admin endpoint of this server's PostgreSQL.
        type: dict
        suboptions: *db_suboptions
  front:
    description:
      - Which side holds the public IPs and the nginx map that routes the account's domains.
      - V(source) when moving away from the server that answers on the public IPs (step 4, and step 7 once the
        IPs point at the transit server); V(destination) when bringing an account home to it (rollback).
    type: str
    choices: [source, destination]
    default: source
  paths:
    description: The server contract's paths (DESIGN section 1); the same on both servers.
    type: dict
    default: {}
    suboptions:
      registry_dir:
        description: Account registry.
        type: path
        default: /etc/hosting/accounts
      home_root:
        description: Parent of the account homes.
        type: path
        default: /home
      mail_root:
        description: Parent of the account Maildirs.
        type: path
        default: /var/mail
      langs_dir:
        description: Installed language runtimes.
        type: path
        default: /opt/hosting/langs
      journal_dir:
        description: The migration journal.
        type: path
        default: /var/lib/hosting-migration
      nginx_map_dir:
        description: Directory of the web front's C(docroots.map) and C(backends.map).
        type: path
        default: /etc/nginx/hosting
      cron_dir:
        description:
          - Per-user crontabs (file named after the account). The freeze moves the account's aside into the
            journal's C(held/) directory; the unfreeze of the destination installs the copy carried there.
        type: path
        default: /var/spool/cron/crontabs
      mail_hold_dir:
        description:
          - Where the server's mail looks for a hold, a file named after the account, there from the freeze on
            (the source keeps it after the move; the destination's is removed at the unfreeze).
          - While it exists the server answers SMTP for the account with a temporary failure (the sender or relay
            retries), delivers nothing into its mailboxes and refuses IMAP logins for the moment; mail arriving
            during the freeze is never lost on the side being left.
          - After the switch the source's hold file reads C(relay <address>), the address of
            O(destination.http_backend); the source's MTA then relays the account's mail there, including what it
            queued during the move.
        type: path
        default: /etc/hosting/mail-hold
  precopy_only:
    description: Stop after the live pre-copy of files and mail (the transit_server role's refresh).
    type: bool
    default: false
  db_method:
    description:
      - How databases travel. V(dump) copies them while the account is frozen (downtime grows with size).
      - V(live) replicates them from the pre-copy on and only catches up while frozen. PostgreSQL - a publication
        on the source, a subscription here. MariaDB - one consistent snapshot of the account's tables with its
        binary log position, loaded while live, then a named replication connection C(hm_<account>) here,
        filtered to the account's databases, as a replication user made for the move.
      - A live database is compared while the account still runs (by chunks of an integer primary key, as
        pt-table-checksum does, so rows written meanwhile are re-checked alone); the freeze re-hashes only the
        chunks of the rows changed since, read from decoding slots (PostgreSQL) or the binary logs (MariaDB) of
        both sides, and a change made here outside the replication is a difference. Neither the copy nor the
        verification grows the downtime with the size.
      - Prerequisites (step 3 sets them with M(hosting.migration.db_live_prereqs)) - PostgreSQL C(wal_level=logical)
        on the source (and here, for the fast verification), free replication slots and WAL senders, the
        destination server on this host; MariaDB the source's binary log (ROW for the fast verification, and a
        binary log here too), distinct C(server_id)s, no scheduled events in the databases, at most 100 tables.
        MariaDB gives a server one replication connection per source server - concurrent moves from one source take
        turns (the next waits, still live, before its snapshot, up to 15 minutes, else travels by dump).
      - A database whose prerequisites do not hold or whose tables changed since the pre-copy travels by dump,
        and RV(db_precopy) or RV(databases) says why. Nothing of the replication is left after the move, a failed
        move or a rollback.
      - V(auto) is V(live) for both engines.
      - With O(precopy_only=true) no replication starts (it would hold the source's log until the move).
    type: str
    choices: [auto, live, dump]
    default: auto
  db_parallel:
    description: Tables copied at once.
    type: int
    default: 2
  before_verify_command:
    description:
      - A command (argv list) run on this server after the copy and before verification, e.g. a provider's own
        check. A non-zero exit fails the move before the switch. The test suite uses it to corrupt a copy.
    type: list
    elements: str
  front_refresh:
    description:
      - A command (argv list) that brings a server's web front in line with its maps, run on each server whose
        C(docroots.map) the switch changed (the destination, and the side left when an account comes home), between
        writing the map and reloading nginx. A provider's panel regenerates its virtual hosts here; the lab's
        C(hosting-tls sync) gives each domain served there its HTTPS server with the account's certificate (which
        travelled in its home). A non-zero exit fails the move before its front changes.
    type: list
    elements: str
    default: []
  services:
    description:
      - The account's own services (its PHP-FPM pool, a supervised application server) and the managers that run
        them. Each manager reads an account's definition from C(<dir>/<account>.conf) and re-reads its directory
        when C(reload) runs.
      - The freeze sets the source's definitions aside in the journal's C(held/) and reloads (the account's
        processes stop there, before its sessions end); the final delta copies them beside the destination's held
        copies (compared before the switch); just before the switch the destination installs them and reloads, so
        the account runs on one server at a time. A failed move stops them here and starts them on the source
        again. The side left keeps its copies aside for a rollback.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The manager's name, e.g. C(php-fpm) (C(^[a-z0-9][a-z0-9_-]{0,31}$)).
        type: str
        required: true
      dir:
        description: The directory the manager reads the accounts' definitions from.
        type: path
        required: true
      reload:
        description: The command (argv list) that makes the manager re-read the directory; it must start and stop
          the accounts' services accordingly before it exits.
        type: list
        elements: str
        required: true
  force:
    description: With O(state=rolled_back), overwrite changes made here since the switch (they are reported).
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports the plan (what would be copied, sizes, estimated downtime) from read-only queries and rsync's
      own dry run; writes nothing on either server.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows where the account is before and after (server and front backend of each domain).
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
    details: A finished move reports C(changed=false); a half-done one converges on a re-run.
requirements:
  - rsync and ssh on both servers
  - PyMySQL and mariadb-client tools for MariaDB accounts; psycopg2 and postgresql-client for PostgreSQL ones
  - PyYAML (the account registry is YAML)
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Move alice to the transit server (runs on the transit server)
  hosting.migration.account_move:
    account: alice
    source:
      host: 10.77.0.10
      name: client
      ssh_key_file: /root/.ssh/hosting_migration_ed25519
      known_hosts_file: /var/lib/hosting-migration/known_hosts
      mariadb: {host: 10.77.0.10, user: hosting_admin, password: "{{ vault_db_admin_password }}"}
    destination:
      name: transit
      http_backend: "10.77.0.11:8080"
      mariadb: {host: 127.0.0.1, user: hosting_admin, password: "{{ vault_db_admin_password }}"}
    front: source

- name: Bring alice home (runs on the client server)
  hosting.migration.account_move:
    account: alice
    state: rolled_back
    source: {host: 10.77.0.11, name: transit, ssh_key_file: /root/.ssh/hosting_migration_ed25519}
    destination: {name: client}
    front: destination
"""

RETURN = r"""
location:
  description: Where the account lives after the run (the journal's name of the server).
  returned: always
  type: str
  sample: transit
downtime_s:
  description: Seconds from the freeze to the switch (0 when nothing moved).
  returned: always
  type: float
  sample: 1.84
phases:
  description: Seconds spent in each phase that ran.
  returned: always
  type: dict
  sample: {precheck: 0.4, precopy: 3.1, freeze: 0.2, final_delta: 0.3, databases: 1.1, verify: 0.3, switch: 0.1}
bytes:
  description: Bytes transferred by rsync (files and mail) and the databases' sizes.
  returned: always
  type: dict
  sample: {files: 1048576, databases: 20971520}
databases:
  description:
    - Per database, seconds, bytes, its engine and the method that carried it (V(live) or V(dump)); for V(live),
      C(catch_up_seconds) inside the freeze and C(hashed_in_freeze), the tables the freeze's verification hashed
      whole (the others were compared while live, and only the chunks of rows changed since were hashed again);
      for a database that fell back to V(dump), C(live_problem).
  returned: when databases were copied
  type: dict
db_precopy:
  description: Per engine, what the pre-copy started - C(method), and C(live_problems) where the live method
    could not run.
  returned: when the move ran its pre-copy
  type: dict
  sample: {postgresql: {method: dump, live_problems: ["wal_level on the source is replica, not logical"]}}
db_users:
  description:
    - Per engine, the account's database users the freeze locked on the source (C(frozen); users already locked
      before it stay locked and are not listed) and those given back their logins here (C(unfrozen)). MariaDB users
      as C(user@host), PostgreSQL roles by name.
  returned: when the move froze the account
  type: dict
  sample: {frozen: {mariadb: ["alice@%"], postgresql: []}, unfrozen: {mariadb: ["alice@%"], postgresql: []}}
plan:
  description: In check mode, what would be copied and the estimated downtime.
  returned: check mode
  type: dict
conflicts:
  description: With O(state=rolled_back), what changed on this server since the switch.
  returned: when there are conflicts
  type: list
  elements: str
"""

import hashlib
import json
import os
import time
import traceback
from contextlib import ExitStack, contextmanager

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import (
    account_services,
    dbcopy,
    freeze,
    unix_account,
    webfront,
)
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name, validate_domain
from ansible_collections.hosting.migration.plugins.module_utils.hosts import LocalHost, RemoteHost, run_checked
from ansible_collections.hosting.migration.plugins.module_utils.journal import Journal, JournalError, LockedError
from ansible_collections.hosting.migration.plugins.module_utils.move_db import DatabaseSide, EngineError, user_names
from ansible_collections.hosting.migration.plugins.module_utils.move_files import FileSide
from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshError, SshTarget

try:
    import yaml

    HAS_YAML = True
    YAML_IMPORT_ERROR = None
except ImportError:
    YAML_IMPORT_ERROR = traceback.format_exc()
    HAS_YAML = False

DB_OPTIONS = dbcopy.endpoint_options()
PATH_DEFAULTS = {
    "registry_dir": "/etc/hosting/accounts",
    "home_root": "/home",
    "mail_root": "/var/mail",
    "langs_dir": "/opt/hosting/langs",
    "journal_dir": "/var/lib/hosting-migration",
    "nginx_map_dir": "/etc/nginx/hosting",
    "cron_dir": "/var/spool/cron/crontabs",
    "mail_hold_dir": "/etc/hosting/mail-hold",
}


def argument_spec() -> dict:
    db = {"type": "dict", "options": DB_OPTIONS}
    return {
        "account": {"type": "str", "required": True},
        "state": {"type": "str", "choices": ["moved", "rolled_back"], "default": "moved"},
        "source": {
            "type": "dict",
            "required": True,
            "options": {
                "host": {"type": "str", "required": True},
                "name": {"type": "str"},
                "ssh_user": {"type": "str", "default": "root"},
                "ssh_port": {"type": "int", "default": 22},
                "ssh_key_file": {"type": "path", "no_log": False},
                "known_hosts_file": {"type": "path"},
                "mariadb": db,
                "postgresql": db,
            },
        },
        "destination": {
            "type": "dict",
            "required": True,
            "options": {
                "name": {"type": "str", "required": True},
                "http_backend": {"type": "str"},
                "mariadb": db,
                "postgresql": db,
            },
        },
        "front": {"type": "str", "choices": ["source", "destination"], "default": "source"},
        "paths": {
            "type": "dict",
            "default": {},
            "options": {key: {"type": "path", "default": value} for key, value in PATH_DEFAULTS.items()},
        },
        "precopy_only": {"type": "bool", "default": False},
        "db_method": {"type": "str", "choices": ["auto", "live", "dump"], "default": "auto"},
        "db_parallel": {"type": "int", "default": 2},
        "before_verify_command": {"type": "list", "elements": "str"},
        "front_refresh": {"type": "list", "elements": "str", "default": []},
        "services": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "name": {"type": "str", "required": True},
                "dir": {"type": "path", "required": True},
                "reload": {"type": "list", "elements": "str", "required": True},
            },
        },
        "force": {"type": "bool", "default": False},
    }


class MoveFailed(Exception):
    """A phase failed; the message is the one-sentence reason given to the user."""


class AccountMove:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.account = params["account"]
        self.paths = params["paths"]
        src = params["source"]
        self.source_name = src["name"] or src["host"]
        self.destination_name = params["destination"]["name"]
        target = SshTarget(
            host=src["host"],
            user=src["ssh_user"],
            port=src["ssh_port"],
            key_file=src["ssh_key_file"],
            known_hosts_file=src["known_hosts_file"],
            control_path=os.path.join(module.tmpdir, "ssh-source"),
        )
        self.local = LocalHost(f"destination ({self.destination_name})")
        self.remote = RemoteHost(target, f"source {self.source_name}")
        self.front = self.remote if params["front"] == "source" else self.local
        self.services = account_services.managers_from_options(params["services"])
        self.journal = Journal(self.paths["journal_dir"])
        self.files = FileSide(target, self.paths, self.account)
        self.databases = DatabaseSide(module, params, self.account)
        self.phases: dict[str, float] = {}
        self.result: dict = {"changed": False, "downtime_s": 0.0, "phases": self.phases, "bytes": {}}
        self.guardian: int | None = None
        self.interrupted = False
        self.journal_run = None
        self.record: dict = {}

    # ---- helpers ------------------------------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str):
        """Time a phase and note it in the journal's progress file, so a watcher sees which one runs."""
        started = time.monotonic()
        self.progress(name)
        yield
        self.phases[name] = round(time.monotonic() - started, 3)
        self.journal_run.finish_phase(name, {"seconds": self.phases[name]})

    def progress(self, phase: str, **counters) -> None:
        """Counters: bytes_done, bytes_total, tables_done, tables_total (what a watcher of a long move sees)."""
        self.journal_run.report(phase, **counters)

    def save(self) -> None:
        self.journal_run.save()

    def registry_path(self) -> str:
        return f"{self.paths['registry_dir']}/{self.account}.yml"

    def map_path(self, name: str) -> str:
        return f"{self.paths['nginx_map_dir']}/{name}"

    def load_registry(self, text: str) -> dict:
        entry = yaml.safe_load(text) or {}
        if entry.get("name") != self.account:
            raise MoveFailed(f"registry file {self.registry_path()} on the source names {entry.get('name')!r}")
        for domain in entry.get("domains", []):
            validate_domain(domain["name"])
        for site in entry.get("sites", []):
            validate_domain(site["domain"])
            webfront.validate_docroot(site["document_root"])
        for key in ("uid", "gid"):
            if not isinstance(entry.get(key), int) or entry[key] < 1000:
                raise MoveFailed(f"registry of {self.account} has no valid {key} (an integer of at least 1000)")
        return entry

    def domains(self, entry: dict) -> list[str]:
        return sorted({d["name"] for d in entry.get("domains", [])} | {s["domain"] for s in entry.get("sites", [])})

    def front_backends(self, domains: list[str]) -> dict[str, str | None]:
        entries = webfront.parse_map(self.front.read_text(self.map_path(webfront.BACKENDS_MAP)))
        return {domain: entries.get(domain) for domain in domains}

    def switched_backends(self, domains: list[str]) -> dict[str, str | None]:
        """The front's backend of each domain once the account is served here."""
        if self.front is self.remote:
            return dict.fromkeys(domains, self.module.params["destination"]["http_backend"])
        return dict.fromkeys(domains)

    # ---- the move -----------------------------------------------------------------------------------------------

    def run(self) -> dict:
        self.record = self.journal.read_state(self.account)
        try:
            entry_text = self.remote.read_text(self.registry_path())
        except SshError as error:
            if not self.module.check_mode:
                raise MoveFailed(f"cannot reach the source over SSH: {error}") from error
            # The first real run sets up the SSH trust; until then a dry run plans what it can reach.
            return self.plan(None, [], note=f"files not planned, the source is not reachable over SSH yet: {error}")
        if self.is_done(entry_text):
            self.result["location"] = self.destination_name
            return self.result
        if entry_text is None:
            raise MoveFailed(f"account {self.account} has no registry file {self.registry_path()} on the source")
        entry = self.load_registry(entry_text)
        domains = self.domains(entry)
        if self.module.check_mode:
            return self.plan(entry, domains)
        operation = f"account_move {self.module.params['state']} {self.source_name}->{self.destination_name}"
        with ExitStack() as stack:
            try:
                self.journal_run = stack.enter_context(self.journal.lock(self.account, operation))
            except LockedError as held:
                raise MoveFailed(str(held)) from held
            stack.callback(self.databases.close)
            self.record = self.journal_run.state
            self.move(entry, entry_text, domains)
        return self.result

    def is_done(self, entry_text: str | None) -> bool:
        """A finished move of the same kind: the journal and the front agree the account is served here."""
        if self.record.get("location") != self.destination_name or self.record.get("status") != "done":
            return False
        if self.record.get("operation") != self.module.params["state"]:
            return False
        if self.local.read_text(self.registry_path()) is None:
            return False
        domains = self.record.get("domains", [])
        return self.front_backends(domains) == self.switched_backends(domains)

    def plan(self, entry: dict | None, domains: list[str], note: str | None = None) -> dict:
        files = self.files.plan() if note is None else {"note": note}
        databases = self.databases.plan(entry)
        self.result.update(
            changed=True,
            plan={
                "source": self.source_name,
                "destination": self.destination_name,
                "domains": domains,
                "files": files,
                "databases": databases,
                "estimated_downtime_s": round(1.0 + databases.get("estimated_seconds", 0.0), 1),
            },
            location=self.record.get("location") or self.source_name,
        )
        if self.module._diff:
            self.result["diff"] = {
                "before": {"location": self.source_name, "front": self.front_backends(domains)},
                "after": {"location": self.destination_name, "front": self.switched_backends(domains)},
            }
        return self.result

    def move(self, entry: dict, entry_text: str, domains: list[str]) -> None:
        state = self.module.params["state"]
        before = self.front_backends(domains)
        # "running" here means an earlier attempt died mid-move: its freeze record is still to be honoured.
        self.interrupted = self.record.get("status") == "running"
        known_location = self.record.get("location")
        if self.interrupted and self.switched_already(state, domains):
            # That attempt switched, then died or failed before its unfreeze ended: the account is served here
            # already, and only the unfreeze is left (a second freeze would hold the side that serves it).
            self.journal_run.reset_phases()
            self.result["changed"] = True
            self.arrive(domains, before)
            return
        if not self.interrupted:
            self.record.pop("switched_at", None)
        self.record.update(
            account=self.account,
            operation=state,
            source=self.source_name,
            destination=self.destination_name,
            domains=domains,
            status="running",
        )
        self.record["location"] = self.record.get("location") or self.source_name
        self.journal_run.reset_phases()
        with self.phase("precheck"):
            self.precheck(entry, state, known_location)
        with self.phase("precopy"):
            created_user = self.copy_unix_user(entry)
            self.result["bytes"]["precopy"] = self.files.pull(self.progress)
            # A refresh only (steps 3 and 6) starts no replication: a slot kept open for days would hold the
            # source's WAL. The move itself starts it, minutes before its freeze.
            if not self.module.params["precopy_only"]:
                self.result["db_precopy"] = self.databases.precopy(entry, self.progress)
        self.result["changed"] = True
        if self.module.params["precopy_only"]:
            # A refresh that found everything already here changed nothing.
            self.result["changed"] = self.interrupted or created_user or self.files.items_changed > 0
            self.record["status"] = "precopied"
            self.save()
            return
        frozen_at = time.monotonic()
        try:
            try:
                with self.phase("freeze"):
                    self.freeze(entry, domains)
                with self.phase("final_delta"):
                    self.result["bytes"]["files"] = self.files.pull(self.progress)
                    self.local.write_text(self.registry_path(), entry_text, 0o644)
                    self.copy_unix_user(entry)
                    self.copy_held_state()
                with self.phase("databases"):
                    copied = self.databases.copy(entry, self.progress)
                    self.result["databases"] = copied
                    self.result["bytes"]["databases"] = sum(d.get("bytes", 0) for d in copied.values())
                hook = self.module.params["before_verify_command"]
                if hook:
                    run_checked(self.local, hook)
                with self.phase("verify"):
                    self.verify(entry)
                with self.phase("switch"):
                    self.switch(entry, domains)
            except Exception:
                self.thaw(entry, domains)
                raise
            self.result["downtime_s"] = round(time.monotonic() - frozen_at, 3)
            # Still guarded: killed in the unfreeze, the guardian finishes it (the front already serves from here).
            # A failure here is not thawed (the account is served here now): a re-run finishes the unfreeze.
            self.arrive(domains, before)
        finally:
            freeze.release_guardian(self.guardian)
            self.guardian = None

    def switched_already(self, state: str, domains: list[str]) -> bool:
        """An interrupted attempt of this same move got as far as its switch (the front serves the account from
        here): what it left to do is the unfreeze."""
        return (
            self.record.get("operation") == state
            and self.record.get("switched_at") is not None
            and self.front_backends(domains) == self.switched_backends(domains)
        )

    def arrive(self, domains: list[str], before: dict[str, str | None]) -> None:
        """After the switch: the account's database users, logins, crontab and mail delivery are given back here,
        and the journals of both sides say where it lives."""
        with self.phase("unfreeze"):
            self.result.setdefault("db_users", {})["unfrozen"] = self.databases.unfreeze_destination(
                self.record.get("db_freeze", {})
            )
            manifest = self.record.get("left_manifest", {})
            manifest["tables"] = self.databases.departure_checksums(manifest.get("tables", {}))
            # Logins before the crontab: a job due in between would be refused by PAM, and so run nowhere.
            freeze.release_logins(self.local, self.held_dir(), self.account)
            freeze.release_cron(self.local, self.paths["cron_dir"], self.held_dir(), self.account)
            # Coming back to a side this account once left: that move's hold ends here.
            freeze.release_mail(self.local, self.paths["mail_hold_dir"], self.account)
            # The side left relays the account's mail here from now on (what it queued during the freeze too).
            backend = self.module.params["destination"].get("http_backend")
            if backend:
                freeze.redirect_mail(
                    self.remote, self.paths["mail_hold_dir"], self.account, webfront.backend_address(backend)
                )
        # The source stays frozen on purpose (its copy must not diverge); the freeze record was for a thaw of a
        # failed move and is spent: a later move must not take it for its own.
        self.record.update(
            location=self.destination_name,
            status="done",
            downtime_s=self.result["downtime_s"],
            db_freeze={},
            mail_held=False,
            web_freeze={},
        )
        self.record.pop("rollback_checked", None)
        self.save()
        self.mirror_journal()
        self.result["location"] = self.destination_name
        if self.module._diff:
            self.result["diff"] = {
                "before": {"location": self.source_name, "front": before},
                "after": {"location": self.destination_name, "front": self.front_backends(domains)},
            }

    def held_dir(self) -> str:
        return f"{self.paths['journal_dir']}/held"

    def held_crontab(self) -> str:
        """Where the freeze keeps the account's crontab aside (freeze.hold_cron), on either side."""
        return f"{self.held_dir()}/{self.account}"

    def held_expiry(self) -> str:
        """Where the login hold keeps the user's own expiry date (freeze.hold_logins), on either side."""
        return f"{self.held_dir()}/{self.account}.expiry"

    def copy_unix_user(self, entry: dict) -> bool:
        """The source's user (passwd, shadow, supplementary groups) here, its logins held until the unfreeze
        gives it the expiry the source's hold kept; True if anything changed."""
        identity = unix_account.read_identity(self.remote, self.account)
        if identity is None:
            raise MoveFailed(f"account {self.account} has no Unix user on the source {self.source_name}")
        if (identity.uid, identity.gid) != (entry["uid"], entry["gid"]):
            raise MoveFailed(
                f"the Unix user {self.account} on the source has uid:gid {identity.uid}:{identity.gid}, "
                f"its registry says {entry['uid']}:{entry['gid']}"
            )
        if not os.path.exists(identity.shell):
            raise MoveFailed(
                f"the login shell {identity.shell} of {self.account} is not installed on {self.destination_name}"
            )
        return unix_account.apply_identity(self.local, self.account, identity, held=True)

    def copy_held_state(self) -> None:
        """What the freeze set aside on the source, copied aside here: the crontab (installed at the unfreeze) and
        the user's own expiry date (given back at the unfreeze). The source keeps both for a rollback."""
        crontab = unix_account.read_crontab(self.remote, self.held_crontab())
        unix_account.install_crontab(self.local, self.held_crontab(), crontab)
        account_services.copy_held(self.remote, self.local, self.services, self.held_dir(), self.account)
        expiry = self.remote.read_text(self.held_expiry())
        if expiry is None:
            run_checked(self.local, ["rm", "-f", "--", self.held_expiry()])
        else:
            self.local.write_text(self.held_expiry(), expiry, 0o600)

    def unix_differences(self) -> list[str]:
        """The Unix user and the held crontab and expiry, source against here (both frozen now)."""
        found = []
        source = unix_account.read_identity(self.remote, self.account)
        here = unix_account.read_identity(self.local, self.account)
        if source is None or here is None:
            found.append(f"unix user {self.account}: missing on the {'source' if source is None else 'destination'}")
        else:
            found += [f"unix user {self.account}: {diff}" for diff in source.differences(here)]
        path = self.held_crontab()
        if unix_account.read_crontab(self.remote, path) != unix_account.read_crontab(self.local, path):
            found.append(f"crontab of {self.account} ({path}): content, mode or owner differs")
        if self.remote.read_text(self.held_expiry()) != self.local.read_text(self.held_expiry()):
            found.append(f"held expiry date of {self.account} ({self.held_expiry()}) differs")
        source_services = account_services.fingerprints(self.remote, self.services, self.held_dir(), self.account)
        here_services = account_services.fingerprints(self.local, self.services, self.held_dir(), self.account)
        found += [
            f"{name} service definition of {self.account}: differs"
            for name in source_services
            if source_services[name] != here_services[name]
        ]
        return found

    def unix_fingerprints(self, host) -> dict[str, str | None]:
        """The user and the held crontab as a side leaves them: what a rollback checks for changes."""
        identity = unix_account.read_identity(host, self.account)
        crontab = unix_account.read_crontab(host, self.held_crontab())
        services = account_services.fingerprints(host, self.services, self.held_dir(), self.account)
        return {
            "unix_user": identity.digest() if identity else None,
            "crontab": crontab.digest() if crontab else None,
            **{f"service {name}": digest for name, digest in services.items()},
        }

    def precheck(self, entry: dict, state: str, known_location: str | None) -> None:
        # A move starts from wherever the account is when the journal here has never seen it; a rollback only
        # from the server this journal says it went to (else the user and home here, serving, would be held and
        # overwritten by a copy that never served).
        if (state == "moved" and known_location not in (None, self.source_name)) or (
            state == "rolled_back" and known_location != self.source_name
        ):
            raise MoveFailed(
                f"the journal on {self.destination_name} says {self.account} lives on "
                f"{known_location or self.destination_name}, not on the source {self.source_name}"
            )
        if state == "rolled_back":
            self.check_conflicts()
        for site in entry.get("sites", []):
            runtime = f"{self.paths['langs_dir']}/{site['language']}/{site['version']}"
            if not os.path.isdir(runtime):
                raise MoveFailed(
                    f"{site['language']} {site['version']} used by {site['domain']} is not installed on "
                    f"{self.destination_name} ({runtime} is missing)"
                )
        self.files.check_space(self.databases.size(entry))
        self.databases.precheck(entry)

    def check_conflicts(self) -> None:
        """Rollback: what changed here since the account left must not be overwritten silently."""
        manifest = self.record.get("left_manifest")
        if manifest is None:
            return
        # An interrupted attempt of this same rollback passed this check and then started overwriting here: what
        # differs now is its own work (the account stayed frozen here in between), not a conflict.
        checked = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        if self.record.get("rollback_checked") == checked:
            return
        conflicts = self.files.changed_since(manifest.get("files", {}))
        if "unix" in manifest:
            now = self.unix_fingerprints(self.local)
            conflicts += [
                f"{what} of {self.account} changed since the switch"
                for what, value in manifest["unix"].items()
                if now.get(what) != value
            ]
        conflicts += self.databases.changed_since(manifest.get("tables", {}))
        if conflicts and not self.module.params["force"]:
            self.result["conflicts"] = conflicts
            raise MoveFailed(
                f"{len(conflicts)} change(s) on {self.destination_name} since {self.account} left would be "
                f"overwritten by the rollback (see conflicts); resolve them or set force=true"
            )
        self.record["rollback_checked"] = checked
        self.save()

    def freeze(self, entry: dict, domains: list[str]) -> None:
        # The guardian exists before anything is frozen, so there is no moment where a kill leaves a freeze.
        self.guardian = freeze.start_guardian(lambda: self.guardian_thaw(entry, domains))
        self.record.setdefault("web_freeze", {})
        previous = freeze.hold_web(self.front, self.paths["nginx_map_dir"], domains)
        # Keep the value from before the first freeze: a re-run must not record "maintenance" as the original.
        for domain, value in previous.items():
            self.record["web_freeze"].setdefault(domain, value)
        self.save()
        # Only an interrupted attempt of this very move leaves a freeze record to keep (see thaw and the end of move).
        previous = self.record.get("db_freeze") if self.interrupted else None
        self.record["db_freeze"] = self.databases.freeze_source(entry, previous)
        self.save()
        self.result["db_users"] = {
            "frozen": {engine: user_names(changes) for engine, changes in self.record["db_freeze"].items()}
        }
        # Held before the sessions end: from here nothing is delivered into the account's mailboxes on this side, so
        # no message lands after the final delta; what the MTA accepted just before waits in its queue.
        if freeze.hold_mail(self.remote, self.paths["mail_hold_dir"], self.account):
            self.record["mail_held"] = True
            self.save()
        # Logins held before the sessions end, so none starts between the kill and the copy; the services stopped
        # by their managers first, which would otherwise start the processes the kill ends again.
        freeze.hold_logins(self.remote, self.held_dir(), self.account)
        account_services.stop(self.remote, self.services, self.held_dir(), self.account)
        freeze.end_sessions(self.remote, entry["uid"])
        freeze.hold_cron(self.remote, self.paths["cron_dir"], self.held_dir(), self.account)
        self.save()

    def guardian_thaw(self, entry: dict, domains: list[str]) -> None:
        """In the guardian (a fork of the killed move): fresh connections, the freeze record as the move last
        saved it (this process's memory is a copy from before the freeze), then thaw unless already switched."""
        self.databases.reconnect()
        self.record.update(self.journal.read_state(self.account))
        if self.front_backends(domains) != self.switched_backends(domains):
            self.thaw(entry, domains)
        else:
            # Killed after the front's map was switched, maybe before nginx reloaded it: serve what it says, and
            # finish the arrival here (logins, crontab, mail, database users, journals), as a re-run would.
            webfront.reload_nginx(self.front)
            self.arrive(domains, {})

    def thaw(self, entry: dict, domains: list[str]) -> None:
        """Serve the account from its source again, exactly as before the freeze."""
        web = self.record.get("web_freeze", {})
        freeze.release_web(self.front, self.paths["nginx_map_dir"], {d: web.get(d) for d in domains})
        self.databases.thaw_source(self.record.get("db_freeze", {}))
        # A serving side holds no login hold and no crontab aside from an older move (arrival releases both), so
        # any held here is this move's, even when a kill came between a hold and its record. Logins first: a job
        # due in between would be refused by PAM.
        freeze.release_logins(self.remote, self.held_dir(), self.account)
        freeze.release_cron(self.remote, self.paths["cron_dir"], self.held_dir(), self.account)
        # Services: stopped here first (a failed switch may have started them), then started on the source.
        account_services.stop(self.local, self.services, self.held_dir(), self.account)
        account_services.start(self.remote, self.services, self.held_dir(), self.account)
        if self.record.get("mail_held"):
            freeze.release_mail(self.remote, self.paths["mail_hold_dir"], self.account)
        self.record.update(status="failed", web_freeze={}, db_freeze={}, mail_held=False)
        self.save()
        # The account is served again; a failed move leaves no replication behind (a re-run starts it afresh).
        try:
            self.databases.drop_replication()
        except Exception as error:  # the thaw itself succeeded; a re-run or rollback retries the drop
            self.module.warn(f"could not remove the database replication of the failed move: {error}")

    def verify(self, entry: dict) -> None:
        self.progress("verify")
        differences = self.files.differences()
        differences += self.unix_differences()
        differences += self.databases.differences(entry)
        if differences:
            self.result["differences"] = differences[:100]
            raise MoveFailed(
                f"verification found {len(differences)} difference(s) between source and destination "
                f"(first: {differences[0]}); nothing was switched"
            )
        # What the source looked like when the account left: a rollback checks nothing changed there since.
        self.record["left_manifest"] = {
            "files": self.files.source_manifest(),
            "unix": self.unix_fingerprints(self.remote),
            "tables": self.databases.source_checksums,
        }

    def switch(self, entry: dict, domains: list[str]) -> None:
        # The account's services start here before the front sends it any request.
        started = account_services.start(self.local, self.services, self.held_dir(), self.account)
        if started:
            self.result["services_started"] = started
        docroots = {s["domain"]: s["document_root"] for s in entry.get("sites", [])}
        # Reloaded even when the map already holds the entries: a run killed between writing a map and reloading
        # nginx leaves the entries written but not served, and its re-run finds nothing to change.
        webfront.update_map(self.local, self.map_path(webfront.DOCROOTS_MAP), docroots)
        self.refresh_front(self.local)
        webfront.reload_nginx(self.local)
        if self.front is self.local:
            # Coming home: the front serves the account itself again; the other side stops serving it.
            webfront.update_map(self.remote, self.map_path(webfront.DOCROOTS_MAP), dict.fromkeys(docroots))
            self.refresh_front(self.remote)
            webfront.reload_nginx(self.remote)
        freeze.release_web(self.front, self.paths["nginx_map_dir"], self.switched_backends(domains))
        self.record.update(web_freeze={}, switched_at=time.time())
        self.save()

    def refresh_front(self, host) -> None:
        if self.module.params["front_refresh"]:
            run_checked(host, self.module.params["front_refresh"])

    def mirror_journal(self) -> None:
        """The source's journal learns where the account went (it survives the destination's loss)."""
        path = self.journal.state_path(self.account)
        remote = dict(self.record)
        self.remote.write_text(path, json.dumps(remote, indent=2, sort_keys=True), 0o600)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
    )
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=YAML_IMPORT_ERROR)
    try:
        validate_account_name(module.params["account"])
        account_services.managers_from_options(module.params["services"])
    except ValueError as error:
        module.fail_json(msg=str(error))
    if module.params["front"] == "source" and not module.params["destination"].get("http_backend"):
        module.fail_json(msg="destination.http_backend is required when front=source (where the front proxies to)")
    if module.params["destination"].get("http_backend"):
        try:
            webfront.validate_backend(module.params["destination"]["http_backend"])
        except ValueError as error:
            module.fail_json(msg=str(error))
    move = AccountMove(module)
    try:
        result = move.run()
    except (MoveFailed, EngineError, JournalError, SshError, ValueError, RuntimeError, OSError) as error:
        module.fail_json(msg=str(error), **move.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
