"""dns_zone: authority found by following referrals, with the DNS library's network boundary stubbed (answers
are real dnspython messages built from zone-file text)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import dns.zone
import pytest

from ansible_collections.hosting.migration.plugins.module_utils import dns_zone

REGISTRY, PROVIDER, THIRD = "192.0.2.1", "192.0.2.53", "192.0.2.54"


def message(qname, rdtype, *, aa, answer=(), authority=(), additional=(), rcode=dns.rcode.NOERROR):
    response = dns.message.make_response(dns.message.make_query(qname, rdtype))
    if aa:
        response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    for section, lines in ((response.answer, answer), (response.authority, authority),
                           (response.additional, additional)):  # fmt: skip
        for line in lines:
            name, ttl, _cls, kind, *rdata = line.split()
            section.append(dns.rrset.from_text(name, int(ttl), "IN", kind, " ".join(rdata)))
    return response


class FakeQuerier(dns_zone.Querier):
    """Answers from a table {(server, qname, rdtype): message}; anything else times out, as an absent server."""

    def __init__(self, table):
        super().__init__(timeout=0.1)
        self.table = table
        self.asked = []

    def ask(self, server, qname, rdtype, key=None):
        self.asked.append((server, qname, rdtype))
        try:
            return self.table[(server, dns_zone.absolute(qname), rdtype)]
        except KeyError:
            raise dns_zone.DnsError(f"{server} did not answer {qname} {rdtype}: timeout") from None


SOA_BOB = "bobs-garden.test. 300 IN SOA ns.third.test. hostmaster 7 3600 600 86400 300"


def delegated_world(zone_ns="ns.third.test.", serial_second=7):
    referral = {
        "authority": ["bobs-garden.test. 300 IN NS ns.third.test."],
        "additional": [f"ns.third.test. 300 IN A {THIRD}"],
    }
    table = {}
    for kind in ("SOA", "NS", "MX"):
        table[(REGISTRY, "bobs-garden.test.", kind)] = message("bobs-garden.test.", kind, aa=False, **referral)
    table[(THIRD, "bobs-garden.test.", "SOA")] = message("bobs-garden.test.", "SOA", aa=True, answer=[SOA_BOB])
    table[(THIRD, "bobs-garden.test.", "NS")] = message(
        "bobs-garden.test.", "NS", aa=True, answer=[f"bobs-garden.test. 300 IN NS {zone_ns}"]
    )
    for name, address in (("ns.third.test.", THIRD), ("ns2.third.test.", PROVIDER)):
        table[(REGISTRY, name, "A")] = message(name, "A", aa=True, answer=[f"{name} 300 IN A {address}"])
        table[(REGISTRY, name, "AAAA")] = message(name, "AAAA", aa=True)
    table[(PROVIDER, "bobs-garden.test.", "SOA")] = message(
        "bobs-garden.test.", "SOA", aa=True, answer=[SOA_BOB.replace(" 7 ", f" {serial_second} ")]
    )
    return table


def test_authority_follows_the_referral_and_checks_the_servers():
    querier = FakeQuerier(delegated_world())
    authority = dns_zone.find_authority(querier, "bobs-garden.test", [REGISTRY])
    assert authority.zone == "bobs-garden.test."
    assert authority.delegation == authority.nameservers == ["ns.third.test."]
    assert authority.addresses == {"ns.third.test.": [THIRD]}
    assert authority.serials == {THIRD: 7}
    assert authority.problems == [] and authority.primary == "ns.third.test."
    assert (THIRD, "bobs-garden.test.", "SOA") in querier.asked


def test_a_delegation_that_disagrees_with_the_zone_is_a_problem():
    table = delegated_world(zone_ns="ns2.third.test.")
    table[(THIRD, "bobs-garden.test.", "NS")].answer[0].add(
        dns.rrset.from_text("x.", 300, "IN", "NS", "ns.third.test.")[0]
    )
    authority = dns_zone.find_authority(FakeQuerier(table), "bobs-garden.test", [REGISTRY])
    assert authority.nameservers == ["ns.third.test.", "ns2.third.test."]
    assert any("parent delegates" in p for p in authority.problems)


def test_servers_serving_different_serials_are_a_problem():
    table = delegated_world(serial_second=9)
    table[(THIRD, "bobs-garden.test.", "NS")] = message(
        "bobs-garden.test.",
        "NS",
        aa=True,
        answer=["bobs-garden.test. 300 IN NS ns.third.test.", "bobs-garden.test. 300 IN NS ns2.third.test."],
    )
    table[(REGISTRY, "bobs-garden.test.", "SOA")].authority[0].add(
        dns.rrset.from_text("x.", 300, "IN", "NS", "ns2.third.test.")[0]
    )
    authority = dns_zone.find_authority(FakeQuerier(table), "bobs-garden.test", [REGISTRY])
    assert authority.serials == {THIRD: 7, PROVIDER: 9}
    assert any("serials" in p for p in authority.problems)


def test_a_referral_that_goes_nowhere_is_an_error():
    table = {
        (REGISTRY, "bobs-garden.test.", "SOA"): message(
            "bobs-garden.test.",
            "SOA",
            aa=False,
            authority=["other.test. 300 IN NS ns.third.test."],
            additional=[f"ns.third.test. 300 IN A {REGISTRY}"],
        )
    }
    with pytest.raises(dns_zone.DnsError, match="does not lead closer"):
        dns_zone.find_authority(FakeQuerier(table), "bobs-garden.test", [REGISTRY])


def test_no_server_answering_is_an_error_naming_the_servers():
    with pytest.raises(dns_zone.DnsError, match="no server answered bobs-garden.test. SOA: 192.0.2.1"):
        dns_zone.find_authority(FakeQuerier({}), "bobs-garden.test", [REGISTRY])


def test_a_non_authoritative_answer_is_refused():
    table = {(PROVIDER, "alice.test.", "SOA"): message("alice.test.", "SOA", aa=False)}
    with pytest.raises(dns_zone.DnsError, match="not authoritative"):
        FakeQuerier(table).authoritative(PROVIDER, "alice.test.", "SOA")
    table = {(PROVIDER, "alice.test.", "SOA"): message("alice.test.", "SOA", aa=False, rcode=dns.rcode.REFUSED)}
    with pytest.raises(dns_zone.DnsError, match="REFUSED"):
        FakeQuerier(table).authoritative(PROVIDER, "alice.test.", "SOA")


@pytest.mark.parametrize("name", ["bad name", "a..b", "-x", "x" * 64, ""])
def test_tsig_key_names_are_validated(name):
    with pytest.raises(ValueError, match="invalid TSIG key name"):
        dns_zone.TsigKey(name, "c2VjcmV0")


def test_tsig_key_secret_and_algorithm_are_validated_and_the_secret_is_not_in_repr():
    with pytest.raises(ValueError, match="not base64"):
        dns_zone.TsigKey("k", "not base64!")
    with pytest.raises(ValueError, match="unsupported TSIG algorithm"):
        dns_zone.TsigKey("k", "c2VjcmV0", "hmac-md5")
    assert "c2VjcmV0" not in repr(dns_zone.TsigKey("k", "c2VjcmV0"))


@pytest.mark.parametrize("value", ["ns1.provider.test", "10.0.0.1; id", "", None, "10.0.0.256"])
def test_servers_are_addresses(value):
    with pytest.raises(ValueError, match="invalid DNS server"):
        dns_zone.validate_server(value)


def test_rrsets_of_a_zone_and_its_serial():
    zone = dns.zone.from_text(
        "@ 300 IN SOA ns. host. 42 1 1 1 1\n@ 300 IN NS ns.\n@ 60 IN A 198.51.100.10\n@ 60 IN A 198.51.100.9\n",
        origin="z.test.",
        relativize=False,
    )
    found = dns_zone.rrsets_of(zone)
    assert found[("z.test.", "A")] == {"ttl": 60, "values": ["198.51.100.10", "198.51.100.9"]}
    assert dns_zone.soa_serial(zone) == 42
    assert sorted(dns_zone.make_rdataset("MX", ["5 a.test.", "10 b.test."]).to_text().split("\n")) == [
        "0 IN MX 10 b.test.",
        "0 IN MX 5 a.test.",
    ]
