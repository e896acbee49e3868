#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ip_reroute
short_description: Reroute a server's public IPv4/IPv6 addresses to this server and back, in about a second
version_added: 0.1.0
description:
  - Runs on the transit server (step 6 of the migration). V(rerouted) makes this server answer for the client
    server's public addresses; V(restored) sends them back to where they were, exactly.
  - The order loses nothing. Rerouting adds the addresses here first (on O(interface), IPv6 without duplicate
    address detection) and checks that each answers here on O(probe_port); then the network is pointed here
    (backend V(linux) - one atomic C(ip route replace) per address on the router, all in one C(ip -batch)); then
    it waits until every address answers through the router from the new next hop, and returns the measured time.
    Restoring points the network back first, waits until the old side answers, and only then removes the
    addresses this module added.
  - The previous delivery of each address (backend V(linux) - the router's route, every attribute as
    C(ip -j -d route) shows it) and whether this module added the address here are recorded in the journal
    (C(server/ip_reroute.json) under O(journal_dir)) before anything changes, so V(restored) is exact even after a
    killed run, and removes nothing it did not add.
  - If a change fails halfway, each address is left answered by the old or the new side - the routes are switched
    back when the new side does not answer in time - and the error says which.
  - Backends are a small interface in C(module_utils/reroute.py); a provider's failover-IP API can be added there
    without touching this module's logic.
options:
  addresses:
    description:
      - The public addresses to move, IPv4 and/or IPv6. Single host addresses only - networks, loopback,
        link-local, multicast and unspecified addresses are refused before any change.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(rerouted) delivers O(addresses) to this server.
      - V(restored) delivers them back as the journal recorded them, and removes the addresses this module added.
    type: str
    choices: [rerouted, restored]
    default: rerouted
  backend:
    description: What changes where the network delivers the addresses.
    type: str
    choices: [linux]
    default: linux
  router:
    description:
      - The Linux router whose host routes (C(/32), C(/128) in its main table) deliver the addresses, as this
        server reaches it over SSH (key authentication, host key checked). Needs iproute2 and python3 there.
      - Required with O(backend=linux).
    type: dict
    suboptions:
      host:
        description: Address or host name of the router for SSH.
        type: str
        required: true
      name:
        description: Name of the router in messages; defaults to O(router.host).
        type: str
      ssh_user:
        description: SSH user on the router (it runs C(ip route replace), so usually root).
        type: str
        default: root
      ssh_port:
        description: SSH port of the router.
        type: int
        default: 22
      ssh_key_file:
        description: Private key this server uses to reach the router.
        type: path
      known_hosts_file:
        description: Known-hosts file holding the router's host key (host keys are always checked).
        type: path
  via:
    description:
      - This server's next-hop address per family, as the router reaches it. Required with O(state=rerouted) for
        each family among O(addresses).
    type: dict
    suboptions:
      ipv4:
        description: IPv4 next hop (e.g. this server's management address).
        type: str
      ipv6:
        description: IPv6 next hop.
        type: str
  interface:
    description: The interface of this server that gets the addresses.
    type: str
    default: lo
  probe_port:
    description:
      - TCP port that must answer on every address, here before the route moves and through the router after it
        (e.g. the web server's).
    type: int
    default: 80
  wait_timeout:
    description:
      - Seconds to wait for every address to answer through the new route; past it, the routes are switched back
        and the module fails.
    type: int
    default: 30
  journal_dir:
    description: The migration journal on this server.
    type: path
    default: /var/lib/hosting-migration
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads the router's routes and this server's addresses and returns the plan; changes nothing on either
      and writes no journal record.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows each address's route and whether it is configured here, before and after.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details: Linux with iproute2 on this server; backend V(linux) needs a Linux router with iproute2 and python3.
requirements:
  - iproute2 on this server
  - ssh client on this server
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Make the transit server answer for the client server's public addresses (runs on the transit server)
  hosting.migration.ip_reroute:
    addresses: [198.51.100.10, "2001:db8:77::10"]
    via: {ipv4: 10.77.0.11, ipv6: "fd77::11"}
    router:
      host: 10.77.0.2
      name: gw
      ssh_key_file: /root/.ssh/hosting_migration_ed25519
      known_hosts_file: /var/lib/hosting-migration/known_hosts
  register: reroute

- name: Show how long the switch took
  ansible.builtin.debug:
    msg: "switched in {{ reroute.switch_time_s }} s"

- name: Send the addresses back to the client server, exactly as before
  hosting.migration.ip_reroute:
    addresses: [198.51.100.10, "2001:db8:77::10"]
    state: restored
    router:
      host: 10.77.0.2
      ssh_key_file: /root/.ssh/hosting_migration_ed25519
      known_hosts_file: /var/lib/hosting-migration/known_hosts
"""

RETURN = r"""
switch_time_s:
  description:
    - Seconds from the route change until every moved address answered through the router from its new next hop
      (0 when no route changed). Includes one SSH round trip, so it is an upper bound of the window of loss.
  returned: always
  type: float
  sample: 0.21
answered_s:
  description: Per address whose route changed, seconds until the router's probe got an answer through it.
  returned: always
  type: dict
  sample: {198.51.100.10: 0.0, "2001:db8:77::10": 0.0}
routes:
  description: Each address's route on the router after the run (before it, in check mode).
  returned: always
  type: dict
  sample: {198.51.100.10: via 10.77.0.11 metric 0}
added_addresses:
  description: Addresses added on this server by this run.
  returned: always
  type: list
  elements: str
  sample: [198.51.100.10]
removed_addresses:
  description: Addresses removed from this server by this run (only ones this module had added).
  returned: always
  type: list
  elements: str
  sample: []
plan:
  description: What the run changes (check mode - would change) - routes (from, to), addresses to add and remove.
  returned: always
  type: dict
  sample: {routes: {198.51.100.10: {from: via 10.77.0.10 dev eth0 metric 0, to: via 10.77.0.11 metric 0}},
           add_addresses: [198.51.100.10], remove_addresses: [], where: router gw}
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hosting.migration.plugins.module_utils import reroute
from ansible_collections.hosting.migration.plugins.module_utils.journal import Journal, JournalError

_SAFE_PATH_RE = re.compile(r"/[^\x00-\x1f\x7f]*")


def argument_spec() -> dict:
    return {
        "addresses": {"type": "list", "elements": "str", "required": True},
        "state": {"type": "str", "choices": ["rerouted", "restored"], "default": "rerouted"},
        "backend": {"type": "str", "choices": sorted(reroute.BACKENDS), "default": "linux"},
        "router": {
            "type": "dict",
            "options": {
                "host": {"type": "str", "required": True},
                "name": {"type": "str"},
                "ssh_user": {"type": "str", "default": "root"},
                "ssh_port": {"type": "int", "default": 22},
                "ssh_key_file": {"type": "path", "no_log": False},
                "known_hosts_file": {"type": "path"},
            },
        },
        "via": {"type": "dict", "options": {"ipv4": {"type": "str"}, "ipv6": {"type": "str"}}},
        "interface": {"type": "str", "default": "lo"},
        "probe_port": {"type": "int", "default": 80},
        "wait_timeout": {"type": "int", "default": 30},
        "journal_dir": {"type": "path", "default": "/var/lib/hosting-migration"},
    }


def checked_options(params: dict) -> list[str]:
    """Every input refused before anything is read or changed; returns the addresses."""
    addresses = reroute.parse_addresses(params["addresses"])
    if params["state"] == "rerouted":
        reroute.parse_next_hops(params["via"], addresses)
    reroute.validate_interface(params["interface"])
    if not 0 < params["probe_port"] < 65536:
        raise reroute.RerouteError(f"probe_port {params['probe_port']} is not a TCP port")
    if not 0 < params["wait_timeout"] <= 3600:
        raise reroute.RerouteError(f"wait_timeout {params['wait_timeout']} must be between 1 and 3600 seconds")
    journal_dir = params["journal_dir"]
    if not _SAFE_PATH_RE.fullmatch(journal_dir) or "/../" in journal_dir + "/":
        raise reroute.RerouteError(
            f"journal_dir {journal_dir!r} must be an absolute path without '..' or control characters"
        )
    return addresses


def run(module: AnsibleModule, addresses: list[str]) -> dict:
    """Plan and, outside check mode, execute under the server-level lock: two reroutes at once would each read
    the other's half-done routes as the previous state."""
    if module.check_mode:
        return plan_and_execute(module, addresses)
    with Journal(module.params["journal_dir"]).server_lock(reroute.RECORD_NAME, f"ip_reroute {module.params['state']}"):
        return plan_and_execute(module, addresses)


def plan_and_execute(module: AnsibleModule, addresses: list[str]) -> dict:
    params = module.params
    backend = reroute.make_backend(
        params["backend"], params, addresses, control_path=os.path.join(module.tmpdir, "ssh-router")
    )
    rerouter = reroute.Rerouter(
        backend,
        reroute.LocalAddresses(),
        Journal(params["journal_dir"]),
        interface=params["interface"],
        probe_port=params["probe_port"],
        wait_timeout=params["wait_timeout"],
    )
    plan = rerouter.plan(params["state"], addresses)
    result: dict = {
        "changed": plan.changed,
        "switch_time_s": 0.0,
        "answered_s": {},
        "plan": rerouter.summary(plan),
        "added_addresses": [],
        "removed_addresses": [],
    }
    for warning in plan.warnings:
        module.warn(warning)
    if module._diff:
        result["diff"] = {"before": rerouter.state_view(plan, after=False), "after": rerouter.state_view(plan, True)}
    if module.check_mode or not plan.changed:
        result["routes"] = rerouter.state_view(plan, after=False)["routes"]
        return result
    result.update(rerouter.execute(plan))
    result["added_addresses"] = list(plan.add)
    result["removed_addresses"] = list(plan.remove)
    result["routes"] = rerouter.state_view(plan, after=True)["routes"]
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("backend", "linux", ("router",))],
        supports_check_mode=True,
    )
    try:
        addresses = checked_options(module.params)
        result = run(module, addresses)
    except (reroute.RerouteError, JournalError, ValueError, OSError) as error:
        module.fail_json(msg=str(error))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
