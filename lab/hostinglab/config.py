"""Where the lab's facts come from: the lab inventory (addresses, secrets) and seed.yml (accounts)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab"
SEED_FILE = REPO / "lab" / "seed.yml"

# Runtime handles live under /run (gone with a reboot); data under /srv, outside the /etc and /var that each
# host overlays, so an overlay's upper layer never sits inside its own lower layer.
STATE_DIR = Path(os.environ.get("HOSTING_LAB_STATE_DIR", "/srv/hosting-lab"))
RUN_DIR = Path("/run/hosting-lab")
NS_HANDLES = RUN_DIR / "ns"
NETNS_DIR = Path("/run/netns")

BRIDGE = "hmlab0"
BRIDGE_IPV4 = "10.77.0.1"
BRIDGE_IPV6 = "fd77::1"
PREFIX4 = 24
PREFIX6 = 64
PUBLIC_NET4 = "198.51.100.0/24"
PUBLIC_NET6 = "2001:db8:77::/64"

# What runs where. Every host gets sshd (Ansible reaches it like a real server).
ROLES: dict[str, tuple[str, ...]] = {
    "gw": ("router",),
    "dns": ("bind",),
    "thirdparty-dns": ("bind",),
    "testdb": ("mariadb", "postgresql"),
    "client": ("mariadb", "postgresql", "nginx", "runtime_packages", "accounts", "web", "cron", "mail"),
    "transit": ("mariadb", "postgresql", "nginx", "runtime_packages", "web", "cron", "mail"),
    "mx1": ("mail_relay",),
    "mx2": ("mail_relay",),
    "acme": ("acme",),
}

# Architecture generation of each database host: the old servers keep an older generation's permissive
# settings, testdb runs as the new architecture (what step 1 test-restores against).
GENERATION = {"client": "2020", "transit": "2020", "testdb": "2024"}


@dataclass
class Host:
    name: str
    ipv4: str
    ipv6: str
    roles: tuple[str, ...]
    public_ipv4: list[str] = field(default_factory=list)
    public_ipv6: list[str] = field(default_factory=list)
    fqdn: str = ""

    @property
    def veth(self) -> str:
        # Interface names are capped at 15 characters.
        return "hlv-" + self.name.replace("thirdparty-", "tp")[:10]


@dataclass
class Lab:
    hosts: dict[str, Host]
    vars: dict
    seed: dict

    def host_by_address(self, address: str) -> Host | None:
        for host in self.hosts.values():
            if address in (host.name, host.ipv4, host.ipv6, *host.public_ipv4, *host.public_ipv6):
                return host
        return None


def _load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def load() -> Lab:
    inventory = _load_yaml(INVENTORY / "hosts.yml")
    variables: dict = {}
    for path in sorted((INVENTORY / "group_vars" / "all").glob("*.yml")):
        variables.update(_load_yaml(path))
    hosts: dict[str, Host] = {}
    for group in inventory["all"]["children"].values():
        for name, hostvars in group["hosts"].items():
            hosts[name] = Host(
                name=name,
                ipv4=hostvars["ansible_host"],
                ipv6=hostvars["lab_ipv6"],
                roles=ROLES[name],
                public_ipv4=list(hostvars.get("hosting_public_ipv4", [])),
                public_ipv6=list(hostvars.get("hosting_public_ipv6", [])),
                fqdn=hostvars.get("hosting_server_fqdn", ""),
            )
    return Lab(hosts=hosts, vars=variables, seed=_load_yaml(SEED_FILE))
