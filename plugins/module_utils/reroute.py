# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rerouting a server's public addresses to the server this runs on, and back (ip_reroute, step 6).

Two parts do the work:

- LocalAddresses: the addresses on this server (added on an interface, default `lo`, so it answers for them);
- a Backend: where the network delivers each address. `linux` (LinuxRouter) changes host routes on a Linux router
  over SSH; a provider's failover-IP API would be another class with the same methods, added to BACKENDS.

Rerouter puts them in the order that loses nothing: the addresses are added here and answer locally before the
network is pointed here, and they are removed only after the network points back and the old side answers again.
The journal record (server/ip_reroute.json) holds each address's previous delivery, exactly as the backend read it,
and whether this module added the address here, so that `restored` puts back what was there and nothing else.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshError, SshTarget

RECORD_NAME = "ip_reroute"
RECORD_VERSION = 1
FAMILIES = {4: "ipv4", 6: "ipv6"}
HOST_PREFIX = {4: 32, 6: 128}
# Linux interface names: at most 15 bytes, no '/', whitespace or ':'; refused rather than quoted.
_IFNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}")
# Route attributes copied verbatim from `ip -j -d route` into an `ip route replace` line (ip -batch splits lines on
# whitespace, so each value must be one plain word).
_ROUTE_WORD_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
ROUTE_KEYS = ("type", "dst", "gateway", "dev", "protocol", "scope", "metric", "prefsrc", "flags", "pref")

Runner = Callable[[list[str]], tuple[int, str, str]]


class RerouteError(Exception):
    """A step failed or the input is refused; the message says what and where."""


# ---- input ------------------------------------------------------------------------------------------------------


def family(address: str) -> int:
    return ipaddress.ip_address(address).version


def parse_addresses(values: Iterable[object]) -> list[str]:
    """The addresses to move as canonical strings, in the given order without duplicates.

    Only single unicast host addresses are accepted: no networks (even /32), no loopback, link-local, multicast or
    unspecified address.
    """
    result: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value or value != value.strip():
            raise RerouteError(f"address {value!r} is not an IPv4 or IPv6 address")
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            if "/" in value:
                raise RerouteError(f"address {value!r} is a network: give single host addresses") from None
            raise RerouteError(f"address {value!r} is not an IPv4 or IPv6 address") from None
        if address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified:
            raise RerouteError(f"address {value} cannot be rerouted (loopback, link-local, multicast or unspecified)")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            raise RerouteError(f"address {value} is an IPv4-mapped IPv6 address: give the IPv4 address")
        if address.compressed not in result:
            result.append(address.compressed)
    if not result:
        raise RerouteError("no address to reroute")
    return result


def parse_next_hops(via: Mapping[str, object] | None, addresses: Iterable[str]) -> dict[int, str]:
    """The next hop per family ({4: '10.77.0.11', 6: 'fd77::11'}) for every family among `addresses`."""
    via = via or {}
    hops: dict[int, str] = {}
    for version in sorted({family(a) for a in addresses}):
        key = FAMILIES[version]
        value = via.get(key)
        if value is None:
            raise RerouteError(f"via.{key} is required: it is the {key} next hop of this server on the router")
        try:
            hop = ipaddress.ip_address(value) if isinstance(value, str) else None
        except ValueError:
            hop = None
        if hop is None or hop.version != version or hop.is_unspecified or hop.is_multicast:
            raise RerouteError(f"via.{key} {value!r} is not a unicast {key} address")
        hops[version] = hop.compressed
    return hops


def validate_interface(name: object) -> str:
    if not isinstance(name, str) or not _IFNAME_RE.fullmatch(name):
        raise RerouteError(f"invalid interface name {name!r}")
    return name


# ---- parsing `ip -j` output -------------------------------------------------------------------------------------


def _json_list(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text) if text.strip() else []
    except ValueError as exc:
        raise RerouteError(f"cannot parse {what}: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise RerouteError(f"cannot parse {what}: expected a JSON list of objects")
    return data


def host_route_key(dst: object) -> str | None:
    """The address a route is for if it is a host route (`198.51.100.10`, `2001:db8::1/128`), else None."""
    if not isinstance(dst, str) or dst == "default":
        return None
    try:
        network = ipaddress.ip_network(dst, strict=True)
    except ValueError:
        return None
    if network.prefixlen != HOST_PREFIX[network.version]:
        return None
    return network.network_address.compressed


def parse_routes(text: str) -> dict[str, list[dict[str, Any]]]:
    """Host routes from `ip -j -d route show table main`, by address; each route keeps the attributes of
    ROUTE_KEYS that are present (what restoring it needs)."""
    routes: dict[str, list[dict[str, Any]]] = {}
    for entry in _json_list(text, "the router's routes"):
        key = host_route_key(entry.get("dst"))
        if key is None:
            continue
        routes.setdefault(key, []).append({k: entry[k] for k in ROUTE_KEYS if k in entry})
    return routes


def parse_local_addresses(text: str) -> dict[str, str]:
    """Addresses configured on this host (`ip -j addr show`), each with its interface."""
    found: dict[str, str] = {}
    for link in _json_list(text, "the local addresses"):
        for info in link.get("addr_info", []):
            local = info.get("local")
            if isinstance(local, str):
                try:
                    found.setdefault(ipaddress.ip_address(local).compressed, link.get("ifname", ""))
                except ValueError:
                    continue
    return found


def _word(value: object, what: str) -> str:
    text = str(value)
    if not _ROUTE_WORD_RE.fullmatch(text):
        raise RerouteError(f"unexpected {what} {value!r} in a route")
    return text


def route_command(route: Mapping[str, Any]) -> list[str]:
    """`route replace ...` (argv after `ip`) that makes the kernel hold exactly `route` for its destination.

    replace is atomic: the destination always has the old or the new route, never none. The metric is part of the
    route's key, so it is always given (as read) to replace the route instead of adding a second one.
    """
    key = host_route_key(route.get("dst"))
    if key is None:
        raise RerouteError(f"not a host route: {route.get('dst')!r}")
    version = family(key)
    argv = ["route", "replace"]
    if route.get("type", "unicast") != "unicast":
        argv.append(_word(route["type"], "route type"))
    argv += [f"{key}/{HOST_PREFIX[version]}", "via", _word(route["gateway"], "gateway")]
    for attribute, word in (("dev", "dev"), ("protocol", "proto"), ("scope", "scope")):
        if attribute in route:
            argv += [word, _word(route[attribute], attribute)]
    argv += ["metric", _word(route.get("metric", 0), "metric")]
    if "prefsrc" in route:
        argv += ["src", _word(route["prefsrc"], "source address")]
    if "onlink" in route.get("flags", []):
        argv.append("onlink")
    if "pref" in route:
        argv += ["pref", _word(route["pref"], "preference")]
    return argv


# ---- the two parts ----------------------------------------------------------------------------------------------


class Backend(Protocol):
    """Where the network delivers each address. A delivery is a JSON-able dict the backend alone interprets,
    complete enough that apply() puts it back exactly."""

    name: str
    where: str

    def read(self, addresses: list[str]) -> dict[str, dict[str, Any]]:
        """The current delivery of each address (RerouteError if an address has none or an ambiguous one)."""

    def points_here(self, address: str, delivery: Mapping[str, Any]) -> bool:
        """Whether `delivery` sends `address` to this server."""

    def rerouted(self, address: str, delivery: Mapping[str, Any]) -> dict[str, Any]:
        """`delivery` changed to send `address` to this server."""

    def same(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        """Whether two deliveries are the same (a restore that would change nothing is skipped)."""

    def apply(self, deliveries: Mapping[str, Mapping[str, Any]]) -> None:
        """Make each address's delivery the given one, atomically per address."""

    def wait(self, deliveries: Mapping[str, Mapping[str, Any]], port: int, timeout: float) -> dict[str, float]:
        """Seconds until each address answers on TCP `port` through its new delivery; absent = not in time."""

    def describe(self, delivery: Mapping[str, Any]) -> str:
        """One line for people: plans, diffs, messages."""


# Runs on the router: until `timeout`, checks for each address that the route the router uses points at the
# expected next hop and that a TCP connect to address:port through it succeeds; prints {address: seconds}.
_PROBE = r"""
import ipaddress, json, socket, subprocess, sys, time
port, timeout, expected = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
start = time.monotonic()
answered = {}
while True:
    for address, hop in expected.items():
        if address in answered:
            continue
        out = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True).stdout
        try:
            gateway = ipaddress.ip_address(json.loads(out)[0]["gateway"]).compressed
        except (ValueError, LookupError, TypeError):
            gateway = None
        if gateway != hop:
            continue
        try:
            socket.create_connection((address, port), timeout=0.5).close()
        except OSError:
            continue
        answered[address] = round(time.monotonic() - start, 3)
    if len(answered) == len(expected) or time.monotonic() - start > timeout:
        break
    time.sleep(0.02)
print(json.dumps(answered))
"""


class LinuxRouter:
    """Backend `linux`: host routes (`/32`, `/128`) in the main table of a Linux router reached over SSH; a
    delivery is the route as `ip -j -d route` shows it. Needs iproute2 and python3 (for the probe) there."""

    name = "linux"

    def __init__(self, target: SshTarget, next_hops: Mapping[int, str], name: str | None = None) -> None:
        self.target = target
        self.next_hops = dict(next_hops)
        self.where = f"router {name or target.host}"

    def _run(self, argv: list[str], input: str | None = None, timeout: float = 60) -> str:
        try:
            result = self.target.run(argv, input=input, timeout=timeout)
        except SshError as error:
            raise RerouteError(f"cannot reach the {self.where}: {error}") from error
        if result.rc != 0:
            detail = (result.stderr or result.stdout).strip()[:500]
            raise RerouteError(f"{' '.join(argv[:4])} failed on the {self.where} (exit {result.rc}): {detail}")
        return result.stdout

    def read(self, addresses: list[str]) -> dict[str, dict[str, Any]]:
        routes: dict[str, list[dict[str, Any]]] = {}
        for version in sorted({family(a) for a in addresses}):
            routes.update(parse_routes(self._run(["ip", "-j", "-d", f"-{version}", "route", "show", "table", "main"])))
        current = {}
        for address in addresses:
            found = routes.get(address, [])
            if not found:
                raise RerouteError(
                    f"the {self.where} has no host route for {address} in its main table (backend linux moves "
                    "existing host routes only)"
                )
            if len(found) > 1:
                raise RerouteError(f"the {self.where} has {len(found)} host routes for {address}; expected one")
            current[address] = found[0]
        return current

    def _gateway(self, delivery: Mapping[str, Any]) -> str | None:
        try:
            return ipaddress.ip_address(delivery.get("gateway", "")).compressed
        except ValueError:
            return None

    def points_here(self, address: str, delivery: Mapping[str, Any]) -> bool:
        hop = self.next_hops.get(family(address))
        return hop is not None and self._gateway(delivery) == hop

    def rerouted(self, address: str, delivery: Mapping[str, Any]) -> dict[str, Any]:
        hop = self.next_hops.get(family(address))
        if hop is None:
            raise RerouteError(f"no next hop (via) for {address} on the {self.where}")
        # The interface and source address belong to the old next hop; the kernel picks them for the new one.
        route = {k: v for k, v in delivery.items() if k not in ("dev", "prefsrc")}
        route["gateway"] = hop
        return route

    def same(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        return {k: first.get(k) for k in ROUTE_KEYS} == {k: second.get(k) for k in ROUTE_KEYS}

    def apply(self, deliveries: Mapping[str, Mapping[str, Any]]) -> None:
        # One `ip -batch`: every route changes in one round trip; it stops at the first failure, leaving each route
        # either as it was or as asked (never none).
        if deliveries:
            lines = "".join(" ".join(route_command(route)) + "\n" for route in deliveries.values())
            self._run(["ip", "-batch", "-"], input=lines)

    def wait(self, deliveries: Mapping[str, Mapping[str, Any]], port: int, timeout: float) -> dict[str, float]:
        if not deliveries:
            return {}
        expected = {address: self._gateway(route) for address, route in deliveries.items()}
        argv = ["python3", "-c", _PROBE, str(port), str(timeout), json.dumps(expected)]
        out = self._run(argv, timeout=timeout + 30)
        try:
            answered = json.loads(out)
        except ValueError as exc:
            raise RerouteError(f"unexpected probe output from the {self.where}: {out[:200]!r}") from exc
        return {address: float(seconds) for address, seconds in answered.items() if address in deliveries}

    def describe(self, delivery: Mapping[str, Any]) -> str:
        words = ["via", str(delivery.get("gateway"))]
        if "dev" in delivery:
            words += ["dev", str(delivery["dev"])]
        if "metric" in delivery:
            words += ["metric", str(delivery["metric"])]
        return " ".join(words)


def local_runner(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def tcp_answers(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError:
        return False
    return True


class LocalAddresses:
    """The addresses of the server this runs on, changed with iproute2 (IPv6 with nodad: usable at once)."""

    def __init__(self, run: Runner = local_runner, answers: Callable[[str, int], bool] = tcp_answers) -> None:
        self._run = run
        self.answers = answers

    def _checked(self, argv: list[str]) -> str:
        rc, out, err = self._run(argv)
        if rc != 0:
            raise RerouteError(f"{' '.join(argv)} failed on this server (exit {rc}): {(err or out).strip()[:500]}")
        return out

    def present(self) -> dict[str, str]:
        return parse_local_addresses(self._checked(["ip", "-j", "addr", "show"]))

    def add(self, address: str, interface: str) -> None:
        version = family(address)
        argv = ["ip", "addr", "add", f"{address}/{HOST_PREFIX[version]}", "dev", validate_interface(interface)]
        self._checked(argv + (["nodad"] if version == 6 else []))

    def remove(self, address: str, interface: str) -> None:
        prefix = HOST_PREFIX[family(address)]
        self._checked(["ip", "addr", "del", f"{address}/{prefix}", "dev", validate_interface(interface)])


# ---- plan and order ---------------------------------------------------------------------------------------------


@dataclass
class Plan:
    state: str
    addresses: list[str]
    current: dict[str, dict[str, Any]]
    local: dict[str, str]
    record: dict[str, Any] | None
    # What changes, in this order for `rerouted` (add, then routes) and reversed for `restored` (routes, remove).
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    new_record: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def record_changes(self) -> bool:
        return self.new_record != self.record

    @property
    def changed(self) -> bool:
        return bool(self.routes or self.add or self.remove or self.record_changes)


class Journal(Protocol):
    def read_record(self, name: str) -> Any: ...

    def write_record(self, name: str, data: Any) -> None: ...

    def delete_record(self, name: str) -> bool: ...


def empty_record(backend: str) -> dict[str, Any]:
    return {"version": RECORD_VERSION, "backend": backend, "entries": {}}


class Rerouter:
    def __init__(
        self,
        backend: Backend,
        local: LocalAddresses,
        journal: Journal,
        interface: str = "lo",
        probe_port: int = 80,
        wait_timeout: float = 30,
        clock: Callable[[], float] = time.monotonic,
        local_settle: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.backend = backend
        self.local = local
        self.journal = journal
        self.interface = validate_interface(interface)
        self.probe_port = probe_port
        self.wait_timeout = wait_timeout
        self.clock = clock
        self.local_settle = local_settle
        self.sleep = sleep

    def read_record(self) -> dict[str, Any] | None:
        """The stored record, checked; None if there is none."""
        record = self.journal.read_record(RECORD_NAME)
        if record is None:
            return None
        if not (
            isinstance(record, dict)
            and record.get("version") == RECORD_VERSION
            and isinstance(record.get("entries"), dict)
        ):
            raise RerouteError(f"journal record {RECORD_NAME} is not a version {RECORD_VERSION} ip_reroute record")
        if record.get("backend") != self.backend.name:
            raise RerouteError(
                f"journal record {RECORD_NAME} was written by backend {record.get('backend')!r}, not "
                f"{self.backend.name!r}: restore with that backend first"
            )
        return record

    def plan(self, state: str, addresses: list[str]) -> Plan:
        """Read everything (nothing is written) and decide what changes."""
        record = self.read_record()
        plan = Plan(state, addresses, self.backend.read(addresses), self.local.present(), record)
        base = record or empty_record(self.backend.name)
        entries = json.loads(json.dumps(base["entries"]))  # a deep copy: plan.record stays as stored
        if state == "rerouted":
            self._plan_reroute(plan, entries)
        elif state == "restored":
            self._plan_restore(plan, entries)
        else:
            raise RerouteError(f"unknown state {state!r}")
        plan.new_record = {**base, "entries": entries} if entries else None
        return plan

    def _plan_reroute(self, plan: Plan, entries: dict[str, Any]) -> None:
        for address in plan.addresses:
            current = plan.current[address]
            entry = entries.get(address)
            if not self.backend.points_here(address, current):
                plan.routes[address] = self.backend.rerouted(address, current)
                if entry is None:
                    entry = entries[address] = {"previous": current, "added": False, "interface": self.interface}
            elif entry is None:
                plan.warnings.append(
                    f"{address} is already delivered here ({self.backend.describe(current)}) and the journal has no "
                    "record of where it went before: state=restored will leave it as it is"
                )
            if address not in plan.local:
                plan.add.append(address)
                if entry is not None:
                    entry.update(added=True, interface=self.interface)

    def _plan_restore(self, plan: Plan, entries: dict[str, Any]) -> None:
        for address in plan.addresses:
            current = plan.current[address]
            entry = entries.pop(address, None)
            if entry is None:
                if self.backend.points_here(address, current):
                    raise RerouteError(
                        f"{address} is delivered here ({self.backend.describe(current)}) but the journal has no "
                        "record of its previous route: nothing to restore it to"
                    )
                continue
            previous = entry["previous"]
            if not self.backend.same(current, previous):
                plan.routes[address] = previous
            if entry.get("added") and address in plan.local:
                plan.remove.append(address)

    def summary(self, plan: Plan) -> dict[str, Any]:
        """The plan as the module reports it (check mode, diff)."""
        return {
            "routes": {
                address: {"from": self.backend.describe(plan.current[address]), "to": self.backend.describe(route)}
                for address, route in plan.routes.items()
            },
            "add_addresses": list(plan.add),
            "remove_addresses": list(plan.remove),
            "where": self.backend.where,
        }

    def state_view(self, plan: Plan, after: bool) -> dict[str, Any]:
        """Routes and local addresses of the requested addresses, as they are (or will be, with `after`)."""
        routes = {a: self.backend.describe(plan.current[a]) for a in plan.addresses}
        local = {a for a in plan.addresses if a in plan.local}
        if after:
            routes.update({a: self.backend.describe(r) for a, r in plan.routes.items()})
            local = (local | set(plan.add)) - set(plan.remove)
        return {"routes": routes, "local_addresses": sorted(local)}

    # ---- execution ----

    def execute(self, plan: Plan) -> dict[str, Any]:
        """Carry out `plan`; returns timings. On failure, every address is left answered by the old or the new
        side, the journal still describes how to restore, and RerouteError says what happened."""
        result: dict[str, Any] = {"switch_time_s": 0.0, "answered_s": {}}
        if plan.state == "rerouted":
            self._reroute(plan, result)
        else:
            self._restore(plan, result)
        return result

    def _save(self, record: dict[str, Any] | None) -> None:
        if record is None:
            self.journal.delete_record(RECORD_NAME)
        else:
            self.journal.write_record(RECORD_NAME, record)

    def _switch(self, plan: Plan, targets: dict[str, dict[str, Any]], result: dict[str, Any]) -> None:
        """Point the network at `targets` and wait until each address answers through it; on failure, point the
        addresses back at plan.current (whose side still answers) before raising."""
        started = self.clock()
        try:
            self.backend.apply(targets)
            answered = self.backend.wait(targets, self.probe_port, self.wait_timeout)
        except RerouteError as error:
            raise RerouteError(f"{error}; {self._switch_back(plan, targets)}") from error
        result["switch_time_s"] = round(self.clock() - started, 3)
        result["answered_s"] = answered
        missing = [a for a in targets if a not in answered]
        if missing:
            raise RerouteError(
                f"{', '.join(missing)} did not answer on port {self.probe_port} through the new route within "
                f"{self.wait_timeout} s; {self._switch_back(plan, targets)}"
            )

    def _switch_back(self, plan: Plan, targets: Mapping[str, Any]) -> str:
        try:
            self.backend.apply({a: plan.current[a] for a in targets})
        except RerouteError as error:
            return f"switching back also failed ({error}): the journal record still lists the previous routes"
        return "the previous routes are back"

    def _reroute(self, plan: Plan, result: dict[str, Any]) -> None:
        # The record first: a run killed at any later point leaves what `restored` needs.
        if plan.record_changes:
            self._save(plan.new_record)
        added: list[str] = []
        try:
            for address in plan.add:
                self.local.add(address, self.interface)
                added.append(address)
            for address in plan.routes:
                self._check_answers_here(address)
            if plan.routes:
                self._switch(plan, plan.routes, result)
        except RerouteError:
            if not self._routes_here(plan):
                self._undo_add(added)
                self._save(plan.record)
            raise

    def _check_answers_here(self, address: str) -> None:
        """The address must answer here before the network is pointed at it. A few seconds' grace: a listener
        being reloaded at that moment refuses a connection or two."""
        deadline = self.clock() + self.local_settle
        while not self.local.answers(address, self.probe_port):
            if self.clock() >= deadline:
                where = self.local.present().get(address)
                state = f"configured on {where}" if where else "no longer configured here"
                raise RerouteError(
                    f"{address} does not answer on port {self.probe_port} on this server within "
                    f"{self.local_settle:g} s ({state}): the route stays"
                )
            self.sleep(0.1)

    def _routes_here(self, plan: Plan) -> bool:
        """After a failure: whether any requested address may still be delivered here (then it must stay)."""
        try:
            current = self.backend.read(plan.addresses)
        except RerouteError:
            return True
        return any(self.backend.points_here(a, current[a]) for a in plan.addresses)

    def _undo_add(self, added: list[str]) -> None:
        for address in reversed(added):
            try:
                self.local.remove(address, self.interface)
            except RerouteError:
                continue

    def _restore(self, plan: Plan, result: dict[str, Any]) -> None:
        if plan.routes:
            self._switch(plan, plan.routes, result)
        entries = plan.record["entries"] if plan.record else {}
        for address in plan.remove:
            self.local.remove(address, entries[address].get("interface") or self.interface)
        if plan.record_changes:
            self._save(plan.new_record)


# ---- backends ---------------------------------------------------------------------------------------------------


def linux_backend(options: Mapping[str, Any], addresses: list[str], control_path: str | None) -> Backend:
    router = options.get("router")
    if not router:
        raise RerouteError("router is required by backend linux (the host whose routes deliver the addresses)")
    try:
        target = SshTarget(
            host=router["host"],
            user=router.get("ssh_user") or "root",
            port=router.get("ssh_port") or 22,
            key_file=router.get("ssh_key_file"),
            known_hosts_file=router.get("known_hosts_file"),
            control_path=control_path,
        )
    except ValueError as error:
        raise RerouteError(f"router: {error}") from error
    # Without `via` (state=restored), routes are put back from the journal and none is recognised as pointing here.
    via = options.get("via")
    return LinuxRouter(target, parse_next_hops(via, addresses) if via else {}, router.get("name"))


# name -> factory(module options, addresses, SSH control socket path): a provider's failover-IP API is one more entry.
BACKENDS: dict[str, Callable[[Mapping[str, Any], list[str], str | None], Backend]] = {"linux": linux_backend}


def make_backend(
    name: str, options: Mapping[str, Any], addresses: list[str], control_path: str | None = None
) -> Backend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise RerouteError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None
    return factory(options, addresses, control_path)
