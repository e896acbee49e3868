"""mx_cleanup against the lab's real BIND servers: bob's third-party domain loses exactly `MX 5 srv1`, through an
RFC 2136 update signed with TSIG, found by following the `test.` registry's delegation; checked with dig."""

from __future__ import annotations

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from conftest import run

pytestmark = pytest.mark.lab

MODULE = "hosting.migration.mx_cleanup"
THIRD_PARTY = "10.77.0.54"
SERVER_MX = "5 srv1.provider.test."


def dig_mx(name, server=THIRD_PARTY):
    out = run(["dig", "+norec", "+short", f"@{server}", name, "MX"]).stdout
    return sorted(line for line in out.splitlines() if line)


@pytest.fixture(scope="module")
def settings(lab):
    return {
        "server_host": "srv1.provider.test",
        "mail_servers": ["mx1.provider.test", "mx2.provider.test"],
        "provider_nameservers": ["ns1.provider.test"],
        "start_servers": [lab.hosts["dns"].ipv4],
        "wait_timeout": 20,
    }


@pytest.fixture(scope="module")
def key(lab):
    return {"zone": "bobs-garden.test", "name": lab.vars["hosting_tsig_key_name"],
            "secret": lab.vars["hosting_tsig_secret"]}  # fmt: skip


def third_party_update(lab, build):
    keyring = dns.tsigkeyring.from_text({lab.vars["hosting_tsig_key_name"]: lab.vars["hosting_tsig_secret"]})
    update = dns.update.UpdateMessage("bobs-garden.test", keyring=keyring,
                                      keyalgorithm=lab.vars["hosting_tsig_algorithm"])  # fmt: skip
    build(update)
    assert dns.query.tcp(update, THIRD_PARTY, timeout=5).rcode() == 0


@pytest.fixture
def bob_mx(lab):
    """Bob's seeded MX set, put back after each test whatever it did."""
    before = dig_mx("bobs-garden.test")
    assert before == ["10 mx1.provider.test.", "20 mx2.provider.test.", SERVER_MX]
    yield before
    third_party_update(lab, lambda u: u.replace("bobs-garden.test.", 300, "MX", *before))
    assert dig_mx("bobs-garden.test") == before


def test_without_a_key_nothing_changes_and_the_manual_action_is_returned(module, settings, bob_mx):
    result = module("client", MODULE, {**settings, "account": "bob"})[0]
    assert result["_status"] == "ok" and result["changed"] is False
    (bob,) = result["domains"]
    assert bob["action"] == "manual" and bob["provider_dns"] is False
    assert bob["authority"]["delegation"] == bob["authority"]["nameservers"] == ["ns.thirdparty.test."]
    assert "delete exactly the record 'bobs-garden.test. MX 5 srv1.provider.test.'" in bob["manual_action"]
    assert result["manual_actions"] == [bob["manual_action"]]
    assert dig_mx("bobs-garden.test") == bob_mx


def test_check_mode_plans_the_removal_and_changes_nothing(module, settings, key, bob_mx):
    result = module("client", MODULE, {**settings, "account": "bob", "keys": [key]}, check_mode=True, diff=True)[0]
    assert result["changed"] is True and result["domains"][0]["action"] == "remove"
    assert result["diff"]["before"]["bobs-garden.test"] == bob_mx
    assert result["diff"]["after"]["bobs-garden.test"] == [r for r in bob_mx if r != SERVER_MX]
    assert dig_mx("bobs-garden.test") == bob_mx


def test_removes_only_mx_5_then_reports_no_change(module, settings, key, bob_mx, lab):
    serial = run(["dig", "+short", f"@{THIRD_PARTY}", "bobs-garden.test", "SOA"]).stdout.split()[2]
    result, proc = module("client", MODULE, {**settings, "account": "bob", "keys": [key]})
    assert result["_status"] == "ok", result
    assert result["changed"] is True
    (bob,) = result["domains"]
    assert bob["action"] == "removed"
    assert bob["mx_after"] == ["10 mx1.provider.test.", "20 mx2.provider.test."]
    assert dig_mx("bobs-garden.test") == ["10 mx1.provider.test.", "20 mx2.provider.test."]
    assert int(run(["dig", "+short", f"@{THIRD_PARTY}", "bobs-garden.test", "SOA"]).stdout.split()[2]) > int(serial)
    assert lab.vars["hosting_tsig_secret"] not in proc.stdout + proc.stderr
    again = module("client", MODULE, {**settings, "account": "bob", "keys": [key]})[0]
    assert again["changed"] is False and again["domains"][0]["action"] == "none"


def test_a_domain_left_with_no_mx_is_refused(module, settings, key, lab, bob_mx):
    third_party_update(lab, lambda u: u.replace("solo.bobs-garden.test.", 300, "MX", SERVER_MX))
    try:
        result = module("client", MODULE, {**settings, "domains": ["solo.bobs-garden.test"], "keys": [key]})[0]
        assert result["_status"] == "failed"
        assert "would leave solo.bobs-garden.test with no MX record" in result["msg"]
        assert dig_mx("solo.bobs-garden.test") == [SERVER_MX]
    finally:
        third_party_update(lab, lambda u: u.delete("solo.bobs-garden.test.", "MX"))


def test_a_domain_on_the_provider_dns_is_left_to_the_provider(module, settings, key):
    result = module("client", MODULE, {**settings, "domains": ["alice-shop.test"], "keys": [key]})[0]
    assert result["changed"] is False
    assert result["domains"][0]["action"] == "provider_dns" and result["domains"][0]["provider_dns"] is True
    assert dig_mx("alice-shop.test", server="10.77.0.53") == ["10 mx1.provider.test.", "20 mx2.provider.test."]


@pytest.mark.parametrize(
    "args",
    [{"domains": ["bobs-garden.test'"]}, {"domains": ["`id`.test"]}, {"domains": ["a..test"]},
     {"domains": ["../etc/passwd"]}, {"domains": ["-bob.test"]}, {"domains": ["bob\x00.test"]},
     {"domains": ["a" * 65 + ".test"]}, {"domains": ["bobs-garden.test; rm -rf /"]},
     {"account": "../bob"}, {"account": "-bob"}, {"account": "b" * 65},
     {"domains": ["bobs-garden.test"], "start_servers": ["ns.example; id"]}],
)  # fmt: skip
def test_hostile_input_is_refused_before_any_change(module, settings, key, bob_mx, args):
    result = module("client", MODULE, {**settings, "keys": [key], **args})[0]
    assert result["_status"] == "failed"
    assert result["msg"].startswith(("invalid", "account")) or "invalid" in result["msg"]
    assert dig_mx("bobs-garden.test") == bob_mx
