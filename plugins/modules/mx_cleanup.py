#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mx_cleanup
short_description: Remove the old server's own MX record from domains that use another DNS provider
version_added: 0.1.0
description:
  - Step 4 of the migration. Domains that do not use the provider's DNS servers but do use its mail servers carry
    an C(MX 5 <server>) record pointing at the hosting server itself, next to C(MX 10 mx1) and C(MX 20 mx2). Once
    the account has moved, that record must go, and only that record.
  - For each domain, the module finds the zone's authoritative servers from live DNS by following referrals from
    O(start_servers), checks that the parent's delegation and the zone's NS set agree and that every server serves
    the same SOA serial, and reads the MX set from each of them (non-recursive, authoritative answers only).
  - A domain on the provider's DNS (one of O(provider_nameservers) in its NS set) is left to the provider's own zone
    handling and reported as such.
  - For a domain on another provider's DNS whose MX set holds C(MX <server_preference> <server_host>), that one
    record value is deleted by an RFC 2136 update signed with TSIG when O(keys) has a key for the zone (with a
    prerequisite that it is still there); otherwise nothing is changed and the exact manual action for the
    domain's DNS provider is returned (and shown as a warning).
  - A change that would leave a name with no MX record is refused, and so is any change when the authority of the
    zone is unclear (delegation and zone disagree, servers disagree). Everything is decided for every domain
    before anything changes.
  - After a change it re-queries every authoritative server until all serve the new set (bounded by
    O(wait_timeout)) and reports that final set.
extends_documentation_fragment:
  - hosting.migration.dns
options:
  domains:
    description:
      - Domains to clean up. Lowercase names only; anything else is refused before any query.
      - Either O(domains) or O(account) (or both) must be given.
    type: list
    elements: str
  account:
    description:
      - Also clean up every domain in this account's registry file (read on the host the module runs on).
      - Must match C(^[a-z][a-z0-9]{1,31}$).
    type: str
  registry_dir:
    description: Directory of the account registry (C(<account>.yml) files).
    type: path
    default: /etc/hosting/accounts
  server_host:
    description: The hosting server's name as it appears in the MX record to remove (e.g. C(srv1.provider.test)).
    type: str
    required: true
  server_preference:
    description: The preference of the record to remove. Only C(MX <server_preference> <server_host>) is removed.
    type: int
    default: 5
  mail_servers:
    description:
      - The provider's mail servers (e.g. C(mx1.provider.test), C(mx2.provider.test)). Their records are never
        touched; the result says whether each domain still uses them.
    type: list
    elements: str
    default: []
  provider_nameservers:
    description: Names of the provider's DNS servers; a domain whose NS set holds one of them is on the provider's DNS.
    type: list
    elements: str
    required: true
  keys:
    description: TSIG keys that may update zones of other DNS providers, one per zone.
    type: list
    elements: dict
    default: []
    suboptions:
      zone:
        description: The zone the key may update.
        type: str
        required: true
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
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Every query is made; no update is sent. The result shows the planned action per domain.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The MX set of each domain before and after.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details: Talks DNS over the network from wherever it runs.
seealso:
  - module: hosting.migration.dns_redirect
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Remove the server's MX 5 from alice's domains hosted elsewhere
  hosting.migration.mx_cleanup:
    account: alice
    server_host: srv1.provider.test
    mail_servers: [mx1.provider.test, mx2.provider.test]
    provider_nameservers: [ns1.provider.test]
    keys:
      - zone: bobs-garden.test
        name: hosting-migration
        secret: "{{ vault_tsig_secret }}"

- name: Only report what would change, with the lab's registry as start servers
  hosting.migration.mx_cleanup:
    domains: [bobs-garden.test]
    server_host: srv1.provider.test
    provider_nameservers: [ns1.provider.test]
    start_servers: [10.77.0.53]
  check_mode: true
"""

RETURN = r"""
domains:
  description: Per domain, what was found and done.
  returned: always
  type: list
  elements: dict
  contains:
    domain:
      description: The domain.
      type: str
    zone:
      description: The zone that holds it.
      type: str
    authority:
      description: The zone's servers, the delegation, SOA serials per server, and any disagreement found.
      type: dict
    provider_dns:
      description: Whether the domain uses the provider's DNS servers.
      type: bool
    provider_mail:
      description: Whether its MX set (after the run) holds one of O(mail_servers).
      type: bool
    mx_before:
      description: The MX set found, as C(preference exchange) strings.
      type: list
      elements: str
    mx_after:
      description: The MX set after the run (as re-queried from every authoritative server after a change).
      type: list
      elements: str
    action:
      description:
        - V(none) (no server record), V(removed) (or V(remove) in check mode), V(manual) (no key for the zone),
          V(provider_dns) (left to the provider), V(refused) (the change would leave no MX, or authority unclear).
      type: str
    manual_action:
      description: With V(manual), the exact change to make at the domain's DNS provider.
      type: str
    reason:
      description: Why a change was refused.
      type: str
  sample:
    - domain: bobs-garden.test
      zone: bobs-garden.test.
      provider_dns: false
      provider_mail: true
      mx_before: ["10 mx1.provider.test.", "20 mx2.provider.test.", "5 srv1.provider.test."]
      mx_after: ["10 mx1.provider.test.", "20 mx2.provider.test."]
      action: removed
manual_actions:
  description: The manual actions of every domain without a key, one line each.
  returned: always
  type: list
  elements: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import dns_zone
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name, validate_domain

try:
    import yaml

    HAS_YAML = True
    YAML_IMPORT_ERROR = None
except ImportError:
    YAML_IMPORT_ERROR = traceback.format_exc()
    HAS_YAML = False


def argument_spec() -> dict:
    return {
        "domains": {"type": "list", "elements": "str"},
        "account": {"type": "str"},
        "registry_dir": {"type": "path", "default": "/etc/hosting/accounts"},
        "server_host": {"type": "str", "required": True},
        "server_preference": {"type": "int", "default": 5},
        "mail_servers": {"type": "list", "elements": "str", "default": []},
        "provider_nameservers": {"type": "list", "elements": "str", "required": True},
        "keys": {"type": "list", "elements": "dict", "default": [], "no_log": False,
                 "options": {"zone": {"type": "str", "required": True}, **dns_zone.tsig_key_options()}},
        **dns_zone.dns_argument_spec(),
    }  # fmt: skip


def host_name(value: str) -> str:
    """A host name as DNS writes it: lowercase, absolute."""
    return dns_zone.absolute(validate_domain(dns_zone.relative(value)))


class Settings:
    """The validated options: anything hostile fails here, before any query."""

    def __init__(self, params: dict) -> None:
        self.domains = [validate_domain(d) for d in params["domains"] or []]
        self.account = params["account"] and validate_account_name(params["account"])
        if not self.domains and not self.account:
            raise ValueError("give the domains to clean up, or an account whose registry lists them")
        self.registry_dir = params["registry_dir"]
        self.server = host_name(params["server_host"])
        self.preference = params["server_preference"]
        if not 0 <= self.preference <= 65535:
            raise ValueError(f"server_preference {self.preference} is not an MX preference (0-65535)")
        self.mail_servers = [host_name(m) for m in params["mail_servers"]]
        if self.server in self.mail_servers:
            raise ValueError(f"server_host {self.server} is also in mail_servers, whose records are never touched")
        self.provider_ns = {host_name(n) for n in params["provider_nameservers"]}
        self.start = [dns_zone.validate_server(s) for s in params["start_servers"] or dns_zone.ROOT_SERVERS]
        self.keys = {}
        for key in params["keys"]:
            zone = host_name(key["zone"])
            self.keys[zone] = dns_zone.TsigKey(key["name"], key["secret"], key["algorithm"])
        self.querier = dns_zone.Querier(timeout=params["query_timeout"])
        self.wait_timeout = params["wait_timeout"]

    @property
    def record(self) -> str:
        return f"{self.preference} {self.server}"


def registry_domains(settings: Settings) -> list[str]:
    path = os.path.join(settings.registry_dir, settings.account + ".yml")
    try:
        with open(path, encoding="utf-8") as handle:
            entry = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the registry of account {settings.account} ({path}): {exc}") from exc
    return [validate_domain(d.get("name") if isinstance(d, dict) else d) for d in entry.get("domains") or []]


def mx_set(settings: Settings, authority: dns_zone.Authority, domain: str) -> list[str]:
    """The MX set every authoritative server serves; DnsError if they differ or one has no answer."""
    answers = {}
    for server in authority.servers:
        response = settings.querier.authoritative(server, dns_zone.absolute(domain), "MX")
        if response.rcode() != 0:
            raise dns_zone.DnsError(f"{domain} does not exist at {server}")
        answers[server] = dns_zone.rrset_texts(response, dns_zone.absolute(domain), "MX")
    if not answers:
        raise dns_zone.DnsError(f"no authoritative server of {authority.zone} has an address")
    if len({tuple(v) for v in answers.values()}) > 1:
        raise dns_zone.DnsError(f"the servers of {authority.zone} serve different MX sets for {domain}: {answers}")
    return next(iter(answers.values()))


def manual_action(domain: str, authority: dns_zone.Authority, record: str, keep: list[str]) -> str:
    kept = ", ".join(f"'MX {k}'" for k in keep)
    return (
        f"At the DNS provider of {domain} (name servers {', '.join(authority.nameservers)}), delete exactly the record "
        f"'{domain}. MX {record}' and keep {kept} as they are."
    )


def plan_domain(settings: Settings, domain: str) -> dict:
    authority = dns_zone.find_authority(settings.querier, domain, settings.start)
    found = {"domain": domain, "zone": authority.zone, "authority": authority.as_dict(),
             "provider_dns": bool(settings.provider_ns & set(authority.nameservers))}  # fmt: skip
    mx = mx_set(settings, authority, domain)
    found.update(mx_before=mx, mx_after=mx, action="none")
    found["provider_mail"] = any(r.split()[1] in settings.mail_servers for r in mx)
    if found["provider_dns"]:
        found["action"] = "provider_dns"
        return found
    if settings.record not in mx:
        return found
    keep = [r for r in mx if r != settings.record]
    if not keep:
        found.update(action="refused", reason=f"removing MX {settings.record} would leave {domain} with no MX record")
    elif authority.problems:
        found.update(action="refused", reason="the zone's authority is unclear: " + "; ".join(authority.problems))
    elif authority.zone in settings.keys:
        found.update(action="remove", mx_after=keep)
        found["provider_mail"] = any(r.split()[1] in settings.mail_servers for r in keep)
    else:
        found.update(action="manual", manual_action=manual_action(domain, authority, settings.record, keep))
    return found


def remove_record(settings: Settings, found: dict) -> None:
    zone = found["zone"]
    name = dns_zone.absolute(found["domain"])
    authority = dns_zone.find_authority(settings.querier, found["domain"], settings.start)
    primary = dns_zone.resolve_addresses(settings.querier, authority.primary, settings.start) or authority.servers
    update = dns_zone.new_update(zone, settings.keys[zone])
    # Value-dependent prerequisite (RFC 2136 2.4.2): only if the MX set is still exactly the one read.
    update.present(name, dns_zone.make_rdataset("MX", found["mx_before"]))
    update.delete(name, "MX", settings.record)
    dns_zone.send_update(primary[0], update, timeout=settings.querier.timeout * 3)

    def converged():
        fresh = dns_zone.find_authority(settings.querier, found["domain"], settings.start)
        try:
            current = mx_set(settings, fresh, found["domain"])
        except dns_zone.DnsError as exc:
            return False, str(exc)
        return (not fresh.problems and current == found["mx_after"]), current

    done, current = dns_zone.wait_for(converged, settings.wait_timeout)
    if not done:
        raise dns_zone.DnsError(
            f"the update of {zone} was accepted, but after {settings.wait_timeout}s its servers do not all serve "
            f"{found['mx_after']} (last seen: {current})"
        )
    found["mx_after"] = current
    found["action"] = "removed"


def run(module: AnsibleModule, settings: Settings) -> dict:
    domains = list(settings.domains)
    if settings.account:
        domains += [d for d in registry_domains(settings) if d not in domains]
    plans = [plan_domain(settings, domain) for domain in domains]
    result = {
        "domains": plans,
        "manual_actions": [p["manual_action"] for p in plans if p["action"] == "manual"],
        "changed": any(p["action"] == "remove" for p in plans),
    }
    if module._diff:
        result["diff"] = {
            "before": {p["domain"]: p["mx_before"] for p in plans},
            "after": {p["domain"]: p["mx_after"] for p in plans},
        }
    refused = [f"{p['domain']}: {p['reason']}" for p in plans if p["action"] == "refused"]
    if refused:
        module.fail_json(msg="refused, nothing changed: " + "; ".join(refused), **result)
    for line in result["manual_actions"]:
        module.warn(line)
    if module.check_mode:
        return result
    for found in plans:
        if found["action"] == "remove":
            remove_record(settings, found)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not dns_zone.HAS_DNSPYTHON:
        module.fail_json(msg=missing_required_lib("dnspython"))
    if module.params["account"] and not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=YAML_IMPORT_ERROR)
    try:
        settings = Settings(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        result = run(module, settings)
    except (ValueError, dns_zone.DnsError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
