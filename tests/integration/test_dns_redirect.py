"""dns_redirect against the lab's provider BIND: switch alice's records to the transit addresses and back, compared
by AXFR; refusals (wrong key, a server that is not authoritative, too large a share) happen before any change."""

from __future__ import annotations

import json

import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.zone
import pytest

pytestmark = pytest.mark.lab

MODULE = "hosting.migration.dns_redirect"
ZONE = "alice-shop.test"
CLIENT_TO_TRANSIT = {"198.51.100.10": "198.51.100.20", "2001:db8:77::10": "2001:db8:77::20"}


def axfr(lab, zone=ZONE):
    """{(name, type): (ttl, sorted values)} of the whole zone and its SOA serial, by a transfer of the test's own."""
    keyring = dns.tsigkeyring.from_text({lab.vars["hosting_tsig_key_name"]: lab.vars["hosting_tsig_secret"]})
    transfer = dns.query.xfr(lab.hosts["dns"].ipv4, zone, keyring=keyring, relativize=False,
                             keyalgorithm=lab.vars["hosting_tsig_algorithm"])  # fmt: skip
    zone_data = dns.zone.from_xfr(transfer, relativize=False)
    records = {}
    for name, node in zone_data.nodes.items():
        for rdataset in node.rdatasets:
            records[(name.to_text(), dns.rdatatype.to_text(rdataset.rdtype))] = (
                rdataset.ttl,
                sorted(rd.to_text() for rd in rdataset),
            )
    serial = zone_data.find_rdataset(zone_data.origin, "SOA")[0].serial
    soa = records.pop((zone_data.origin.to_text(), "SOA"))
    return records, serial, soa


@pytest.fixture(scope="module")
def args(lab):
    return {
        "zones": [ZONE],
        "server": lab.hosts["dns"].ipv4,
        "start_servers": [lab.hosts["dns"].ipv4],
        "key": {"name": lab.vars["hosting_tsig_key_name"], "secret": lab.vars["hosting_tsig_secret"],
                "algorithm": lab.vars["hosting_tsig_algorithm"]},
        "address_map": CLIENT_TO_TRANSIT,
        "wait_timeout": 20,
    }  # fmt: skip


def journal_record(ssh, zone=ZONE):
    out = ssh("transit", f"cat /var/lib/hosting-migration/server/dns_redirect.{zone}.json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_check_mode_changes_nothing(module, args, lab, ssh):
    before, serial = axfr(lab)[:2]
    record = journal_record(ssh)
    result = module("transit", MODULE, {**args, "state": "redirected"}, check_mode=True, diff=True)[0]
    assert result["_status"] == "ok" and result["changed"] is True
    assert {(c["name"], c["type"]) for c in result["zones"][0]["changes"]} == {
        ("alice-shop.test.", "A"),
        ("alice-shop.test.", "AAAA"),
    }
    assert "198.51.100.20" in result["diff"][0]["after"]
    assert axfr(lab)[:2] == (before, serial)
    assert journal_record(ssh) == record


def test_lower_redirect_and_restore_byte_identical(module, args, lab, ssh):
    before, serial, soa = axfr(lab)
    assert before[("alice-shop.test.", "A")] == (300, ["198.51.100.10"])

    lowered = module("transit", MODULE, {**args, "state": "lowered", "ttl": 30})[0]
    assert lowered["_status"] == "ok" and lowered["changed"] is True, lowered
    records, serial_lowered = axfr(lab)[:2]
    assert records[("alice-shop.test.", "A")] == (30, ["198.51.100.10"])
    assert serial_lowered > serial
    snapshot = journal_record(ssh)
    assert snapshot["serial"] == serial and "198.51.100.10" in snapshot["axfr"]

    redirected = module("transit", MODULE, {**args, "state": "redirected"})[0]
    assert redirected["changed"] is True
    records, serial_redirected = axfr(lab)[:2]
    assert records[("alice-shop.test.", "A")] == (30, ["198.51.100.20"])
    assert records[("alice-shop.test.", "AAAA")] == (30, ["2001:db8:77::20"])
    assert serial_redirected > serial_lowered
    assert redirected["zones"][0]["serial_after"] == serial_redirected
    unchanged = {k: v for k, v in before.items() if k[1] not in ("A", "AAAA")}
    assert {k: records[k] for k in unchanged} == unchanged
    again = module("transit", MODULE, {**args, "state": "redirected"})[0]
    assert again["changed"] is False

    restored = module("transit", MODULE, {**args, "state": "restored"})[0]
    assert restored["changed"] is True
    records, serial_restored, soa_restored = axfr(lab)
    assert records == before
    assert soa_restored[1][0].split()[:2] == soa[1][0].split()[:2] and serial_restored > serial_redirected
    again = module("transit", MODULE, {**args, "state": "restored"})[0]
    assert again["changed"] is False
    assert journal_record(ssh)["status"] == "restored"


def test_a_wrong_key_is_refused_before_any_change(module, args, lab):
    before = axfr(lab)[:2]
    wrong = {**args, "key": {**args["key"], "secret": "d3Jvbmcta2V5LXdyb25nLWtleQ=="}}
    result, proc = module("transit", MODULE, {**wrong, "state": "redirected"})
    assert result["_status"] == "failed" and "TSIG" in result["msg"]
    assert axfr(lab)[:2] == before
    assert "d3Jvbmcta2V5LXdyb25nLWtleQ==" not in proc.stdout + proc.stderr


def test_a_server_that_is_not_authoritative_is_refused(module, args, lab):
    before = axfr(lab)[:2]
    result = module("transit", MODULE, {**args, "server": lab.hosts["thirdparty-dns"].ipv4, "state": "redirected"})[0]
    assert result["_status"] == "failed"
    assert "not authoritative" in result["msg"] or "REFUSED" in result["msg"]
    assert axfr(lab)[:2] == before


def test_a_plan_changing_too_much_of_a_zone_needs_force(module, args, lab):
    before = axfr(lab)[:2]
    result = module("transit", MODULE, {**args, "state": "redirected", "max_change_share": 0.2})[0]
    assert result["_status"] == "failed" and "more than 20%" in result["msg"]
    assert axfr(lab)[:2] == before


@pytest.mark.parametrize(
    "bad",
    [{"zones": ["alice-shop.test'"]}, {"zones": ["../x"]}, {"zones": ["-a.test"]}, {"zones": ["a\x00.test"]},
     {"zones": ["a" * 64 + ".test"]}, {"server": "ns1.provider.test; id"},
     {"address_map": {"198.51.100.10": "2001:db8:77::20"}}, {"address_map": {"x": "198.51.100.20"}},
     {"journal_dir": "relative/dir"}],
)  # fmt: skip
def test_hostile_input_is_refused(module, args, lab, bad):
    before = axfr(lab)[:2]
    result = module("transit", MODULE, {**args, "state": "redirected", **bad})[0]
    assert result["_status"] == "failed"
    assert axfr(lab)[:2] == before
