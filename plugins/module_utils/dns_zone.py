# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS for the server-level moves (mx_cleanup, dns_redirect): who is authoritative for a name, found by following
referrals from a set of start servers as a resolver does (so a delegation that disagrees with the zone, or servers
whose SOA serials differ, are seen), direct non-recursive queries to those servers, RFC 2136 updates signed with
TSIG, zone transfers, and bounded waits until every authoritative server agrees.

Nothing here trusts a recursive resolver's cache: every answer that a decision rests on comes from a server that
says it is authoritative (AA flag) for the zone.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

try:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdataset
    import dns.rdatatype
    import dns.tsig
    import dns.tsigkeyring
    import dns.update
    import dns.zone
except ImportError:
    HAS_DNSPYTHON = False
else:
    HAS_DNSPYTHON = True

from ansible_collections.hosting.migration.plugins.module_utils.account import validate_domain

# The IANA root servers (IPv4): where resolution starts unless start servers are given (a lab gives its registry).
ROOT_SERVERS = (
    "198.41.0.4", "170.247.170.2", "192.33.4.12", "199.7.91.13", "192.203.230.10", "192.5.5.241", "192.112.36.4",
    "198.97.190.53", "192.36.148.17", "192.58.128.30", "193.0.14.129", "199.7.83.42", "202.12.27.33",
)  # fmt: skip
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
# A resolution that needs more referrals than this is a loop or a misconfiguration, not the Internet.
MAX_REFERRALS = 12
_KEY_NAME_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?:\.(?!-)[A-Za-z0-9_-]{1,63})*\.?")


class DnsError(Exception):
    """A DNS server did not answer, refused, or answered something that cannot be trusted for a decision."""


def validate_server(value: object) -> str:
    """DNS servers are given by address: a name would need the very resolution whose answers we check."""
    try:
        return str(ipaddress.ip_address(value))  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"invalid DNS server {value!r}: an IPv4 or IPv6 address") from None


@dataclass(frozen=True)
class TsigKey:
    name: str
    secret: str = field(repr=False)
    algorithm: str = "hmac-sha256"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _KEY_NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid TSIG key name {self.name!r}")
        if self.algorithm not in TSIG_ALGORITHMS:
            raise ValueError(f"unsupported TSIG algorithm {self.algorithm!r}; use one of {', '.join(TSIG_ALGORITHMS)}")
        try:
            base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ValueError(f"the secret of TSIG key {self.name} is not base64") from None

    def message_args(self) -> dict:
        keyring = dns.tsigkeyring.from_text({self.name: self.secret})
        return {"keyring": keyring, "keyname": dns.name.from_text(self.name), "keyalgorithm": self.algorithm}


def absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def relative(name: str) -> str:
    return name[:-1] if name.endswith(".") else name


@dataclass
class Querier:
    """Non-recursive queries (RD clear) over UDP with TCP on truncation; failures become DnsError naming the
    server and the question."""

    timeout: float = 3.0
    port: int = 53

    def ask(self, server: str, qname: str, rdtype: str, key: TsigKey | None = None) -> dns.message.Message:
        query = dns.message.make_query(qname, rdtype)
        query.flags &= ~dns.flags.RD
        if key is not None:
            query.use_tsig(**_tsig_args(key))
        try:
            response = dns.query.udp(query, server, timeout=self.timeout, port=self.port)
            if response.flags & dns.flags.TC:
                response = dns.query.tcp(query, server, timeout=self.timeout, port=self.port)
        except dns.tsig.PeerError as exc:
            raise DnsError(f"{server} refused the TSIG key {key.name if key else ''} ({exc})") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsError(f"{server} did not answer {qname} {rdtype}: {exc or type(exc).__name__}") from exc
        return response

    def authoritative(self, server: str, qname: str, rdtype: str, key: TsigKey | None = None) -> dns.message.Message:
        """An answer from `server` that it gives as authoritative (AA), or DnsError."""
        response = self.ask(server, qname, rdtype, key)
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsError(f"{server} answered {dns.rcode.to_text(rcode)} for {qname} {rdtype}")
        if not response.flags & dns.flags.AA:
            raise DnsError(f"{server} is not authoritative for {qname} (no AA flag in its answer)")
        return response


def _tsig_args(key: TsigKey) -> dict:
    args = key.message_args()
    return {"keyring": args["keyring"], "keyname": args["keyname"], "algorithm": args["keyalgorithm"]}


def rrset_texts(response: dns.message.Message, qname: str, rdtype: str) -> list[str]:
    """The rdata of `qname`/`rdtype` in the answer section, as sorted presentation strings."""
    wanted = dns.name.from_text(qname)
    kind = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in response.answer if rrset.name == wanted and rrset.rdtype == kind
                  for rd in rrset)  # fmt: skip


@dataclass
class Resolution:
    response: dns.message.Message
    server: str
    # (zone, sorted NS names) of every referral followed, outermost first.
    referrals: list[tuple[str, list[str]]]


def iterate(querier: Querier, qname: str, rdtype: str, start_servers: Iterable[str], depth: int = 0) -> Resolution:
    """Resolve like a resolver from `start_servers` (root servers, or a registry's servers in a lab): follow
    referrals until a server answers authoritatively."""
    servers = list(start_servers)
    referrals: list[tuple[str, list[str]]] = []
    target = dns.name.from_text(qname)
    for _step in range(MAX_REFERRALS):
        response, server = _first_answer(querier, servers, qname, rdtype)
        if response.flags & dns.flags.AA or response.answer:
            return Resolution(response, server, referrals)
        ns_sets = [r for r in response.authority if r.rdtype == dns.rdatatype.NS]
        if not ns_sets:
            raise DnsError(f"{server} neither answered nor referred {qname} {rdtype}")
        zone = ns_sets[0].name
        if not target.is_subdomain(zone) or any(zone.to_text() == z for z, _ns in referrals):
            raise DnsError(f"{server} referred {qname} to {zone}, which does not lead closer to it")
        names = sorted(rd.target.to_text() for rd in ns_sets[0])
        referrals.append((zone.to_text(), names))
        servers = _glue(response, names) or _addresses_of(querier, names, start_servers, depth)
    raise DnsError(f"more than {MAX_REFERRALS} referrals resolving {qname}")


def _first_answer(querier: Querier, servers: list[str], qname: str, rdtype: str) -> tuple[dns.message.Message, str]:
    errors = []
    for server in servers:
        try:
            response = querier.ask(server, qname, rdtype)
        except DnsError as exc:
            errors.append(str(exc))
            continue
        if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return response, server
        errors.append(f"{server} answered {dns.rcode.to_text(response.rcode())}")
    raise DnsError(f"no server answered {qname} {rdtype}: " + "; ".join(errors or ["no servers to ask"]))


def _glue(response: dns.message.Message, names: list[str]) -> list[str]:
    wanted = {dns.name.from_text(n) for n in names}
    return [rd.address for rrset in response.additional if rrset.name in wanted
            and rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset]  # fmt: skip


def _addresses_of(querier: Querier, names: list[str], start_servers: Iterable[str], depth: int) -> list[str]:
    if depth > 2:
        raise DnsError(f"cannot find the addresses of {', '.join(names)} without going round in circles")
    found: list[str] = []
    for name in names:
        found += resolve_addresses(querier, name, start_servers, depth + 1)
    return found


def resolve_addresses(querier: Querier, name: str, start_servers: Iterable[str], depth: int = 0) -> list[str]:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        resolution = iterate(querier, name, rdtype, start_servers, depth)
        found += rrset_texts(resolution.response, name, rdtype)
    return found


@dataclass
class Authority:
    """Who serves a name's zone, and whether they agree."""

    zone: str
    primary: str  # the SOA MNAME: where RFC 2136 updates go
    nameservers: list[str]  # the zone's own NS set
    delegation: list[str] | None  # the NS set the parent refers to (None: parent and zone share a server)
    addresses: dict[str, list[str]]  # name server -> its addresses
    serials: dict[str, int]  # address -> SOA serial it serves
    problems: list[str]

    @property
    def servers(self) -> list[str]:
        return [a for ns in self.nameservers for a in self.addresses.get(ns, [])]

    def as_dict(self) -> dict:
        return {
            "zone": self.zone,
            "primary": self.primary,
            "nameservers": self.nameservers,
            "delegation": self.delegation,
            "addresses": self.addresses,
            "serials": self.serials,
            "consistent": not self.problems,
            "problems": self.problems,
        }


def find_authority(querier: Querier, name: str, start_servers: Iterable[str]) -> Authority:
    start = list(start_servers)
    validate_domain(relative(name))
    found = iterate(querier, absolute(name), "SOA", start)
    soa = [r for r in found.response.answer if r.rdtype == dns.rdatatype.SOA]
    soa = soa or [r for r in found.response.authority if r.rdtype == dns.rdatatype.SOA]
    if not soa:
        raise DnsError(f"{found.server} gave no SOA for {name}: cannot tell which zone holds it")
    zone = soa[0].name.to_text()
    apex = iterate(querier, zone, "NS", start)
    nameservers = rrset_texts(apex.response, zone, "NS")
    if not nameservers:
        raise DnsError(f"zone {zone} has no NS records at {apex.server}")
    delegations = [ns for z, ns in found.referrals + apex.referrals if z == zone]
    delegation = delegations[-1] if delegations else None
    problems = []
    if delegation is not None and delegation != nameservers:
        problems.append(f"the parent delegates {zone} to {', '.join(delegation)} but the zone names "
                        f"{', '.join(nameservers)}")  # fmt: skip
    addresses: dict[str, list[str]] = {}
    serials: dict[str, int] = {}
    for ns in sorted(set(nameservers) | set(delegation or [])):
        try:
            addresses[ns] = resolve_addresses(querier, ns, start)
        except DnsError as exc:
            problems.append(f"name server {ns}: {exc}")
            continue
        for address in addresses[ns]:
            try:
                response = querier.authoritative(address, zone, "SOA")
                serials[address] = int(rrset_texts(response, zone, "SOA")[0].split()[2])
            except (DnsError, IndexError) as exc:
                problems.append(f"name server {ns} ({address}): {exc}")
    if len(set(serials.values())) > 1:
        problems.append(f"the SOA serials of {zone} differ between its servers: {serials}")
    primary = soa[0][0].mname.to_text()
    return Authority(zone, primary, nameservers, delegation, addresses, serials, problems)


def wait_for(check: Callable[[], tuple[bool, object]], timeout: float, interval: float = 0.5) -> tuple[bool, object]:
    """Call `check` until it says done or `timeout` seconds pass; returns its last (done, value)."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = check()
        if done or time.monotonic() >= deadline:
            return done, value
        time.sleep(interval)


def send_update(server: str, update: dns.update.UpdateMessage, timeout: float = 10.0, port: int = 53) -> None:
    """Send a signed RFC 2136 update over TCP; any answer but NOERROR (e.g. a prerequisite not met) raises."""
    try:
        response = dns.query.tcp(update, server, timeout=timeout, port=port)
    except dns.tsig.PeerError as exc:
        raise DnsError(f"{server} refused the TSIG key of the update ({exc})") from exc
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsError(f"update sent to {server} got no answer: {exc or type(exc).__name__}") from exc
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        reason = {dns.rcode.NXRRSET: " (the records changed since they were read)",
                  dns.rcode.REFUSED: " (not allowed for this key or zone)",
                  dns.rcode.NOTAUTH: " (not authoritative, or the key is not accepted)"}.get(rcode, "")  # fmt: skip
        raise DnsError(f"{server} answered {dns.rcode.to_text(rcode)} to the update{reason}")


def new_update(zone: str, key: TsigKey) -> dns.update.UpdateMessage:
    return dns.update.UpdateMessage(absolute(zone), **key.message_args())


def transfer(server: str, zone: str, key: TsigKey | None, timeout: float = 10.0, port: int = 53) -> dns.zone.Zone:
    """The whole zone by AXFR from `server`, signed with `key` when given."""
    args = key.message_args() if key is not None else {}
    try:
        messages = dns.query.xfr(
            server, absolute(zone), timeout=timeout, lifetime=timeout * 3, port=port, relativize=False, **args
        )
        return dns.zone.from_xfr(messages, relativize=False)
    except dns.tsig.PeerError as exc:
        raise DnsError(f"{server} refused the TSIG key for a transfer of {zone} ({exc})") from exc
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsError(f"transfer of {zone} from {server} failed: {exc or type(exc).__name__}") from exc


def dns_argument_spec() -> dict:
    """Options shared by the DNS modules; documented by the `hosting.migration.dns` doc fragment."""
    return {
        "start_servers": {"type": "list", "elements": "str"},
        "query_timeout": {"type": "float", "default": 3.0},
        "wait_timeout": {"type": "int", "default": 60},
    }


def tsig_key_options() -> dict:
    return {
        "name": {"type": "str", "required": True},
        "secret": {"type": "str", "required": True, "no_log": True},
        "algorithm": {"type": "str", "default": "hmac-sha256", "choices": list(TSIG_ALGORITHMS)},
    }


def make_rdataset(rdtype: str, values: Iterable[str], ttl: int = 0) -> dns.rdataset.Rdataset:
    return dns.rdataset.from_text_list("IN", rdtype, ttl, list(values))


def rrsets_of(zone: dns.zone.Zone) -> dict[tuple[str, str], dict]:
    """(absolute owner, type) -> {ttl, values (sorted presentation strings)} of every record set of a zone."""
    found = {}
    for name, node in zone.nodes.items():
        owner = name.derelativize(zone.origin).to_text()
        for rdataset in node.rdatasets:
            kind = dns.rdatatype.to_text(rdataset.rdtype)
            found[(owner, kind)] = {"ttl": rdataset.ttl, "values": sorted(rd.to_text() for rd in rdataset)}
    return found


def soa_serial(zone: dns.zone.Zone) -> int:
    return zone.find_rdataset(zone.origin, "SOA")[0].serial
