"""The lab's network: one bridge on the machine, a namespace per host joined to it by a veth pair, and `gw`
routing the hosting servers' public service addresses (what ip_reroute moves)."""

from __future__ import annotations

from .config import BRIDGE, BRIDGE_IPV4, BRIDGE_IPV6, NETNS_DIR, PREFIX4, PREFIX6, PUBLIC_NET4, PUBLIC_NET6, Host, Lab
from .proc import run


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, *args], check=check)


def _sysctl(netns: str | None, key: str, value: str) -> None:
    argv = ["sysctl", "-q", "-w", f"{key}={value}"]
    run(["ip", "netns", "exec", netns, *argv] if netns else argv)


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, "link", "show", "dev", name], check=False) != ""


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_bridge() -> None:
    _ip("link", "add", BRIDGE, "type", "bridge")
    # The controller must not learn shortcuts from ICMP redirects: traffic to public addresses goes through gw.
    for family in ("ipv4", "ipv6"):
        _sysctl(None, f"net.{family}.conf.{BRIDGE}.accept_redirects", "0")
    _ip("addr", "add", f"{BRIDGE_IPV4}/{PREFIX4}", "dev", BRIDGE)
    _ip("addr", "add", f"{BRIDGE_IPV6}/{PREFIX6}", "dev", BRIDGE, "nodad")
    _ip("link", "set", BRIDGE, "up")


def create_host_network(host: Host, gw: Host) -> None:
    _ip("netns", "add", host.name)
    _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
    _ip("link", "set", host.veth, "master", BRIDGE, "up")
    ns = host.name
    _ip("link", "set", "lo", "up", netns=ns)
    # eth0 already exists (created in the namespace): it took the old default, so it is set on its own too.
    for family in ("ipv4", "ipv6"):
        for interface in ("all", "default", "eth0"):
            _sysctl(ns, f"net.{family}.conf.{interface}.accept_redirects", "0")
    _ip("addr", "add", f"{host.ipv4}/{PREFIX4}", "dev", "eth0", netns=ns)
    _ip("addr", "add", f"{host.ipv6}/{PREFIX6}", "dev", "eth0", "nodad", netns=ns)
    _ip("link", "set", "eth0", "up", netns=ns)
    for address in host.public_ipv4:
        _ip("addr", "add", f"{address}/32", "dev", "lo", netns=ns)
    for address in host.public_ipv6:
        _ip("addr", "add", f"{address}/128", "dev", "lo", "nodad", netns=ns)
    if host.name != gw.name:
        _ip("route", "add", PUBLIC_NET4, "via", gw.ipv4, netns=ns)
        _ip("-6", "route", "add", PUBLIC_NET6, "via", gw.ipv6, netns=ns)


def configure_router(lab: Lab, gw: Host) -> None:
    ns = gw.name
    _sysctl(ns, "net.ipv4.ip_forward", "1")
    _sysctl(ns, "net.ipv6.conf.all.forwarding", "1")
    for key in ("all", "default", "eth0"):
        _sysctl(ns, f"net.ipv4.conf.{key}.send_redirects", "0")
    for host in lab.hosts.values():
        for address in host.public_ipv4:
            _ip("route", "replace", f"{address}/32", "via", host.ipv4, netns=ns)
        for address in host.public_ipv6:
            _ip("-6", "route", "replace", f"{address}/128", "via", host.ipv6, netns=ns)
    # The controller reaches public addresses only through gw, like the Internet does.
    _ip("route", "add", PUBLIC_NET4, "via", gw.ipv4)
    _ip("-6", "route", "add", PUBLIC_NET6, "via", gw.ipv6)


def delete_network(lab: Lab) -> None:
    for host in lab.hosts.values():
        if netns_exists(host.name):
            _ip("netns", "del", host.name)
        # Deleting a namespace destroys its veth pair asynchronously: the root end may vanish under us.
        _ip("link", "del", host.veth, check=False)
    # Routes via the bridge go with it.
    _ip("link", "del", BRIDGE, check=False)


def leftovers(lab: Lab) -> list[str]:
    """Everything of the lab's network still present on the machine (empty after a clean `down`)."""
    found = [f"netns {h.name}" for h in lab.hosts.values() if netns_exists(h.name)]
    found += [f"link {name}" for name in [BRIDGE, *(h.veth for h in lab.hosts.values())] if link_exists(name)]
    addresses = run(["ip", "-o", "addr", "show"], check=False)
    lab_addresses = [BRIDGE_IPV4, BRIDGE_IPV6]
    lab_addresses += [a for h in lab.hosts.values() for a in (*h.public_ipv4, *h.public_ipv6)]
    found += [f"address {a}" for a in lab_addresses if f" {a}/" in addresses]
    routes = run(["ip", "route", "show"], check=False) + run(["ip", "-6", "route", "show"], check=False)
    found += [f"route {net}" for net in (PUBLIC_NET4, PUBLIC_NET6) if net in routes]
    return found
