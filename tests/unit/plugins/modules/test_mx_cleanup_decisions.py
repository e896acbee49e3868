"""mx_cleanup's decisions per domain, with the DNS answers stubbed (the lab tests run it against real BIND)."""

from __future__ import annotations

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import dns_zone
from ansible_collections.hosting.migration.plugins.modules import mx_cleanup

PARAMS = {
    "domains": ["bobs-garden.test"], "account": None, "registry_dir": "/etc/hosting/accounts",
    "server_host": "srv1.provider.test", "server_preference": 5,
    "mail_servers": ["mx1.provider.test", "mx2.provider.test"], "provider_nameservers": ["ns1.provider.test"],
    "start_servers": ["10.77.0.53"], "keys": [], "query_timeout": 1.0, "wait_timeout": 1,
}  # fmt: skip
KEY = {"zone": "bobs-garden.test", "name": "k", "secret": "c2VjcmV0", "algorithm": "hmac-sha256"}
FULL_MX = ["10 mx1.provider.test.", "20 mx2.provider.test.", "5 srv1.provider.test."]


def authority(nameservers=("ns.third.test.",), problems=()):
    return dns_zone.Authority("bobs-garden.test.", nameservers[0], list(nameservers), list(nameservers),
                              {n: ["192.0.2.54"] for n in nameservers}, {"192.0.2.54": 7}, list(problems))  # fmt: skip


@pytest.fixture
def dns_answers(monkeypatch):
    state = {"authority": authority(), "mx": FULL_MX}
    monkeypatch.setattr(dns_zone, "find_authority", lambda querier, name, start: state["authority"])
    monkeypatch.setattr(mx_cleanup, "mx_set", lambda settings, auth, domain: list(state["mx"]))
    return state


def plan(**params):
    return mx_cleanup.plan_domain(mx_cleanup.Settings({**PARAMS, **params}), "bobs-garden.test")


def test_with_a_key_only_the_server_record_goes(dns_answers):
    found = plan(keys=[KEY])
    assert found["action"] == "remove"
    assert found["mx_after"] == ["10 mx1.provider.test.", "20 mx2.provider.test."]
    assert found["provider_mail"] is True


def test_without_a_key_the_manual_action_names_the_record_and_nothing_is_planned(dns_answers):
    found = plan()
    assert found["action"] == "manual" and found["mx_after"] == FULL_MX
    assert "delete exactly the record 'bobs-garden.test. MX 5 srv1.provider.test.'" in found["manual_action"]
    assert "'MX 10 mx1.provider.test.', 'MX 20 mx2.provider.test.'" in found["manual_action"]


def test_a_record_with_another_preference_is_not_the_one_to_remove(dns_answers):
    dns_answers["mx"] = ["10 srv1.provider.test.", "20 mx2.provider.test."]
    assert plan(keys=[KEY])["action"] == "none"


def test_removing_the_only_mx_is_refused(dns_answers):
    dns_answers["mx"] = ["5 srv1.provider.test."]
    found = plan(keys=[KEY])
    assert found["action"] == "refused" and "no MX record" in found["reason"]


def test_unclear_authority_refuses_the_change(dns_answers):
    dns_answers["authority"] = authority(problems=["the SOA serials differ"])
    found = plan(keys=[KEY])
    assert found["action"] == "refused" and "serials differ" in found["reason"]


def test_a_domain_on_the_provider_dns_is_only_reported(dns_answers):
    dns_answers["authority"] = authority(nameservers=("ns1.provider.test.",))
    found = plan(keys=[KEY])
    assert found["action"] == "provider_dns" and found["mx_after"] == FULL_MX


@pytest.mark.parametrize(
    "params, message",
    [({"domains": ["a'.test"]}, "invalid domain"), ({"domains": [], "account": None}, "give the domains"),
     ({"account": "../x"}, "invalid account name"), ({"server_host": "srv1;id"}, "invalid domain"),
     ({"mail_servers": ["srv1.provider.test"]}, "also in mail_servers"),
     ({"server_preference": 70000}, "not an MX preference"), ({"start_servers": ["ns.test"]}, "invalid DNS server"),
     ({"keys": [{**KEY, "secret": "not base64!"}]}, "not base64")],
)  # fmt: skip
def test_bad_options_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        mx_cleanup.Settings({**PARAMS, **params})
