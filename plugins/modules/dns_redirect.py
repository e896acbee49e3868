#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dns_redirect
short_description: Point the A/AAAA records of zones on the provider's DNS at other addresses, and back exactly
version_added: 0.1.0
description:
  - Step 6 of the migration. For zones the provider's DNS serves, the A and AAAA records that point at the client
    server's addresses (the keys of O(address_map)) are switched to the transit server's (the values), and later
    restored exactly.
  - O(state=lowered) only lowers the TTL of those records to O(ttl), ahead of time, so that resolvers forget the old
    addresses quickly when they change. O(state=redirected) replaces the addresses (TTL at most O(ttl)).
    O(state=restored) puts back every record set the module changed, with its original TTL and values.
  - Before its first change to a zone, the module takes a snapshot of the whole zone by AXFR and keeps it in the
    journal on the host it runs on (C(server/dns_redirect.<zone>.json)); V(restored) works from that snapshot.
  - Every change is one RFC 2136 update per zone, signed with TSIG, whose prerequisites are the exact record sets
    read just before, so a concurrent edit makes the update fail instead of being overwritten. The server bumps the
    SOA serial; the module waits until every authoritative server of the zone serves the new serial.
  - Refused before any change, for every zone - a server that is not authoritative for the zone, a key the server
    does not accept, and a plan that would change more than O(max_change_share) of a zone's record sets (unless
    O(force=true)).
extends_documentation_fragment:
  - hosting.migration.dns
options:
  zones:
    description: Zones to work on, all served by O(server). Lowercase names only.
    type: list
    elements: str
    required: true
  server:
    description: Address of the zones' primary server, where transfers and updates go.
    type: str
    required: true
  key:
    description: The TSIG key the server accepts updates and transfers with.
    type: dict
    required: true
    suboptions:
      name:
        description: The key's name.
        type: str
        required: true
      secret:
        description: The key's base64 secret. Never logged or returned.
        type: str
        required: true
      algorithm:
        description: The key's algorithm.
        type: str
        default: hmac-sha256
        choices: [hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224, hmac-sha1]
  address_map:
    description:
      - Old address to new address (the client server's public IPv4/IPv6 to the transit server's), same family.
      - Only A/AAAA records holding one of the old addresses are touched.
    type: dict
    required: true
  state:
    description: V(lowered), V(redirected) or V(restored), see the description.
    type: str
    choices: [lowered, redirected, restored]
    default: redirected
  ttl:
    description: TTL (seconds) of the touched records while lowered or redirected. A lower original TTL is kept.
    type: int
    default: 60
  max_change_share:
    description: The largest share (0 to 1) of a zone's record sets that V(lowered) or V(redirected) may change.
    type: float
    default: 0.5
  force:
    description:
      - Change more than O(max_change_share) of a zone, and with V(restored) overwrite record sets that someone
        else changed since the redirection.
    type: bool
    default: false
  journal_dir:
    description: The migration journal, where the zones' snapshots are kept.
    type: path
    default: /var/lib/hosting-migration
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Checks authority and the key, transfers the zones and returns the plan; sends no update, writes no
      snapshot.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The changed record sets of each zone before and after, in zone file format.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details: Talks DNS to O(server); the journal is on the host the module runs on (the transit server in step 6).
seealso:
  - module: hosting.migration.mx_cleanup
  - module: hosting.migration.ip_reroute
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: A day ahead, lower the TTL of the records that point at the client server
  hosting.migration.dns_redirect:
    zones: [alice-shop.test, carol-blog.test]
    server: 10.77.0.53
    key: {name: hosting-migration, secret: "{{ vault_tsig_secret }}"}
    address_map: {198.51.100.10: 198.51.100.20, "2001:db8:77::10": "2001:db8:77::20"}
    state: lowered

- name: Point them at the transit server
  hosting.migration.dns_redirect:
    zones: [alice-shop.test, carol-blog.test]
    server: 10.77.0.53
    key: {name: hosting-migration, secret: "{{ vault_tsig_secret }}"}
    address_map: {198.51.100.10: 198.51.100.20, "2001:db8:77::10": "2001:db8:77::20"}
    state: redirected

- name: After the reinstall, put every record back as it was
  hosting.migration.dns_redirect:
    zones: [alice-shop.test, carol-blog.test]
    server: 10.77.0.53
    key: {name: hosting-migration, secret: "{{ vault_tsig_secret }}"}
    address_map: {198.51.100.10: 198.51.100.20, "2001:db8:77::10": "2001:db8:77::20"}
    state: restored
"""

RETURN = r"""
zones:
  description: Per zone, what was found and changed.
  returned: always
  type: list
  elements: dict
  contains:
    zone:
      description: The zone.
      type: str
    serial_before:
      description: SOA serial before the run.
      type: int
    serial_after:
      description: SOA serial every authoritative server serves after the run.
      type: int
    share:
      description: Share of the zone's record sets the plan changes.
      type: float
    changes:
      description: Each changed record set, with its TTL and values before and after.
      type: list
      elements: dict
  sample:
    - zone: alice-shop.test.
      serial_before: 2024090101
      serial_after: 2024090102
      share: 0.33
      changes:
        - {name: alice-shop.test., type: A, before: {ttl: 300, values: [198.51.100.10]},
           after: {ttl: 60, values: [198.51.100.20]}}
"""

import ipaddress
from contextlib import ExitStack

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import dns_zone
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_domain
from ansible_collections.hosting.migration.plugins.module_utils.journal import Journal, JournalError, utc_now

ADDRESS_TYPES = ("A", "AAAA")


def argument_spec() -> dict:
    return {
        "zones": {"type": "list", "elements": "str", "required": True},
        "server": {"type": "str", "required": True},
        "key": {"type": "dict", "required": True, "no_log": False, "options": dns_zone.tsig_key_options()},
        "address_map": {"type": "dict", "required": True},
        "state": {"type": "str", "choices": ["lowered", "redirected", "restored"], "default": "redirected"},
        "ttl": {"type": "int", "default": 60},
        "max_change_share": {"type": "float", "default": 0.5},
        "force": {"type": "bool", "default": False},
        "journal_dir": {"type": "path", "default": "/var/lib/hosting-migration"},
        **dns_zone.dns_argument_spec(),
    }


def validate_address_map(raw: dict) -> dict[str, str]:
    mapping = {}
    for old, new in raw.items():
        try:
            old_ip, new_ip = ipaddress.ip_address(str(old)), ipaddress.ip_address(str(new))
        except ValueError:
            raise ValueError(f"invalid address_map entry {old!r}: {new!r}: both must be IP addresses") from None
        if old_ip.version != new_ip.version:
            raise ValueError(f"address_map maps {old_ip} to {new_ip}: an address must map to one of its family")
        mapping[str(old_ip)] = str(new_ip)
    if not mapping:
        raise ValueError("address_map is empty: nothing to redirect")
    return mapping


def canonical(kind: str, value: str) -> str:
    return str(ipaddress.ip_address(value)) if kind in ADDRESS_TYPES else value


class ZoneRun:
    def __init__(self, module: AnsibleModule, zone: str, key: dns_zone.TsigKey, mapping: dict[str, str]) -> None:
        self.module = module
        self.params = module.params
        self.zone = dns_zone.absolute(zone)
        self.key = key
        self.mapping = mapping
        self.server = dns_zone.validate_server(self.params["server"])
        self.querier = dns_zone.Querier(timeout=self.params["query_timeout"])
        self.journal = Journal(self.params["journal_dir"])
        self.record_name = "dns_redirect." + dns_zone.relative(self.zone)

    def check_server(self) -> None:
        """Refuse before anything else: a server that does not serve the zone, or a key it does not accept."""
        try:
            self.querier.authoritative(self.server, self.zone, "SOA")
        except dns_zone.DnsError as exc:
            raise dns_zone.DnsError(f"refusing {self.zone}: {exc}") from exc
        response = self.querier.ask(self.server, self.zone, "SOA", key=self.key)
        if response.rcode() != 0:
            raise dns_zone.DnsError(f"refusing {self.zone}: {self.server} rejected the signed query")

    def plan(self) -> dict:
        self.current_zone = dns_zone.transfer(self.server, self.zone, self.key, timeout=self.params["query_timeout"])
        current = dns_zone.rrsets_of(self.current_zone)
        self.serial = dns_zone.soa_serial(self.current_zone)
        record = self.journal.read_record(self.record_name)
        state = self.params["state"]
        changes = []
        if state == "restored":
            changes = self.plan_restore(current, record)
        else:
            for (owner, kind), rrset in sorted(current.items()):
                if kind not in ADDRESS_TYPES or not set(rrset["values"]) & set(self.mapping):
                    continue
                ttl = min(rrset["ttl"], self.params["ttl"])
                values = rrset["values"]
                if state == "redirected":
                    values = sorted({self.mapping.get(canonical(kind, v), v) for v in values})
                if {"ttl": ttl, "values": values} != rrset:
                    changes.append({"name": owner, "type": kind, "before": rrset, "after": {"ttl": ttl,
                                    "values": values}})  # fmt: skip
        share = round(len(changes) / max(len(current), 1), 3)
        self.fresh_snapshot = state != "restored" and (record is None or record.get("status") == "restored")
        return {"zone": self.zone, "serial_before": self.serial, "serial_after": self.serial, "share": share,
                "changes": changes}  # fmt: skip

    def plan_restore(self, current: dict, record: dict | None) -> list[dict]:
        if record is None:
            return []
        changes = []
        for entry in record["rrsets"]:
            owner, kind, original = entry["name"], entry["type"], entry["original"]
            now = current.get((owner, kind))
            if now == original:
                continue
            ours = {canonical(kind, v) for v in original["values"]} | {self.mapping.get(canonical(kind, v), "")
                                                                       for v in original["values"]}  # fmt: skip
            if now is not None and not {canonical(kind, v) for v in now["values"]} <= ours and not self.params["force"]:
                raise dns_zone.DnsError(
                    f"refusing to restore {owner} {kind} in {self.zone}: it now holds {now['values']}, which this "
                    "module did not set (someone changed it since the redirection; force=true overwrites it)"
                )
            changes.append({"name": owner, "type": kind, "before": now, "after": original})
        return changes

    def snapshot(self, changes: list[dict]) -> None:
        """Written before the first change: what `restored` puts back, and the whole zone as it was."""
        self.journal.write_record(self.record_name, {
            "zone": self.zone, "server": self.server, "taken_at": utc_now(), "status": "changed",
            "serial": self.serial, "axfr": self.current_zone.to_text(relativize=False),
            "rrsets": [{"name": c["name"], "type": c["type"], "original": c["before"]} for c in changes],
        })  # fmt: skip

    def add_to_snapshot(self, changes: list[dict]) -> None:
        """A later `redirected` after `lowered` changes record sets the snapshot already holds; new ones join it."""
        record = self.journal.read_record(self.record_name)
        known = {(r["name"], r["type"]) for r in record["rrsets"]}
        new = [{"name": c["name"], "type": c["type"], "original": c["before"]} for c in changes
               if (c["name"], c["type"]) not in known]  # fmt: skip
        if new or record.get("status") != "changed":
            record["rrsets"] += new
            record["status"] = "changed"
            self.journal.write_record(self.record_name, record)

    def apply(self, found: dict) -> None:
        changes = found["changes"]
        if self.params["state"] != "restored":
            if self.fresh_snapshot:
                self.snapshot(changes)
            else:
                self.add_to_snapshot(changes)
        update = dns_zone.new_update(self.zone, self.key)
        for change in changes:
            if change["before"] is None:
                update.absent(change["name"], change["type"])
            else:
                # Value-dependent prerequisite: the record set is still exactly what was read.
                update.present(change["name"], dns_zone.make_rdataset(change["type"], change["before"]["values"]))
            update.replace(change["name"], dns_zone.make_rdataset(change["type"], change["after"]["values"],
                                                                  change["after"]["ttl"]))  # fmt: skip
        dns_zone.send_update(self.server, update, timeout=self.params["query_timeout"] * 3)
        found["serial_after"] = self.wait_for_servers()
        if self.params["state"] == "restored":
            record = self.journal.read_record(self.record_name)
            record.update(status="restored", restored_at=utc_now())
            self.journal.write_record(self.record_name, record)

    def wait_for_servers(self) -> int:
        start = [dns_zone.validate_server(s) for s in self.params["start_servers"] or [self.server]]

        def converged():
            primary = self.querier.authoritative(self.server, self.zone, "SOA")
            serial = int(dns_zone.rrset_texts(primary, self.zone, "SOA")[0].split()[2])
            authority = dns_zone.find_authority(self.querier, dns_zone.relative(self.zone), start)
            serials = set(authority.serials.values()) | {serial}
            return (serial > self.serial and len(serials) == 1 and not authority.problems), serial

        done, serial = dns_zone.wait_for(converged, self.params["wait_timeout"])
        if not done:
            raise dns_zone.DnsError(
                f"the update of {self.zone} was accepted, but after {self.params['wait_timeout']}s its servers do not "
                f"all serve a serial above {self.serial}"
            )
        return serial


def diff_text(found: dict, side: str) -> str:
    lines = []
    for change in found["changes"]:
        rrset = change[side]
        for value in rrset["values"] if rrset else []:
            lines.append(f"{change['name']} {rrset['ttl']} IN {change['type']} {value}")
    return "\n".join(lines) + ("\n" if lines else "")


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not dns_zone.HAS_DNSPYTHON:
        module.fail_json(msg=missing_required_lib("dnspython"))
    params = module.params
    try:
        zones = [validate_domain(z) for z in params["zones"]]
        key = dns_zone.TsigKey(params["key"]["name"], params["key"]["secret"], params["key"]["algorithm"])
        mapping = validate_address_map(params["address_map"])
        dns_zone.validate_server(params["server"])
        for server in params["start_servers"] or []:
            dns_zone.validate_server(server)
        if not 0 < params["max_change_share"] <= 1:
            raise ValueError("max_change_share must be above 0 and at most 1")
        if not 0 < params["ttl"] <= 2147483647:
            raise ValueError(f"ttl {params['ttl']} is not a DNS TTL")
        runs = [ZoneRun(module, zone, key, mapping) for zone in zones]
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    with ExitStack() as locks:
        try:
            if not module.check_mode:
                # One run per zone at a time: a second one would snapshot the first one's half-done change.
                for zone_run in runs:
                    locks.enter_context(
                        zone_run.journal.server_lock(zone_run.record_name, f"dns_redirect {params['state']}")
                    )
            for zone_run in runs:
                zone_run.check_server()
            plans = [zone_run.plan() for zone_run in runs]
        except (dns_zone.DnsError, JournalError) as exc:
            module.fail_json(msg=str(exc))
        run_plans(module, runs, plans)


def run_plans(module: AnsibleModule, runs: list[ZoneRun], plans: list[dict]) -> None:
    params = module.params
    result = {"changed": any(p["changes"] for p in plans), "zones": plans}
    if module._diff:
        result["diff"] = [{"before_header": p["zone"], "after_header": p["zone"], "before": diff_text(p, "before"),
                           "after": diff_text(p, "after")} for p in plans]  # fmt: skip
    if params["state"] != "restored" and not params["force"]:
        too_big = [p for p in plans if p["share"] > params["max_change_share"]]
        if too_big:
            shares = ", ".join(f"{p['zone']} {p['share']:.0%}" for p in too_big)
            module.fail_json(
                msg=f"refusing: the plan changes more than {params['max_change_share']:.0%} of the record sets of "
                f"{shares}; check address_map, or force=true",
                **result,
            )
    if module.check_mode:
        module.exit_json(**result)
    try:
        for zone_run, found in zip(runs, plans):  # noqa: B905 - one plan per run by construction (py3.9 hosts)
            if found["changes"]:
                zone_run.apply(found)
    except (dns_zone.DnsError, JournalError) as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
