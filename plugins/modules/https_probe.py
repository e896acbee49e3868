#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: https_probe
short_description: Fetch each site of a list of domains over HTTPS through a given address, as a browser would
version_added: 0.2.0
description:
  - "Connects to O(address) (typically a server's public IP, before DNS points there) once per domain and speaks
    to it as a visitor's browser speaks to that domain. TLS sends the domain as SNI, the certificate chain is
    verified against O(ca_file) or the system's trust store and must be valid for the domain, then
    C(GET <path> HTTP/1.1) goes out with the domain as C(Host) and C(Connection: close)."
  - Redirects are not followed; the status and C(Location) header are returned as they are. At most 1 MiB of the
    body is read, to find the page's C(<title>).
  - M(ansible.builtin.uri) cannot do this - connecting to an IP, it sends the IP as SNI and checks the certificate
    against the IP.
  - A failing site is reported in its result, not as a task failure; the module fails only on invalid options
    (checked before any connection) or an unusable O(ca_file).
options:
  address:
    description: IPv4 or IPv6 literal, or host name, to connect to for every domain.
    type: str
    required: true
  port:
    description: TCP port of the HTTPS service, 1 to 65535.
    type: int
    default: 443
  domains:
    description:
      - The sites to fetch. Each is sent as SNI, must be a name of the certificate, and is sent as the C(Host)
        header (without the port, as for a site on port 443).
      - Lowercase domain names (letters, digits and hyphens in dot-separated labels); duplicates are probed once.
    type: list
    elements: str
    required: true
  path:
    description:
      - The path (and query) requested on every domain. It starts with C(/) and holds printable ASCII only, without
        spaces or C(#); percent-encode anything else.
    type: str
    default: /
  ca_file:
    description:
      - PEM bundle of the certificate authorities to trust, instead of the system's trust store.
      - Without it the system's trust store is used.
    type: path
  timeout:
    description: Seconds allowed for connecting and for each read, per domain.
    type: float
    default: 10
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads, so it probes in check mode too, with the same results.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
    details: Always C(changed=false).
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Do alice's sites answer through the client server's public IP, with a valid certificate?
  hosting.migration.https_probe:
    address: 203.0.113.10
    domains: [alice-shop.test, www.alice-shop.test]
  register: alice_web

- name: The same through an IPv6 address, trusting the lab's CA only, for one page
  hosting.migration.https_probe:
    address: "2001:db8::10"
    domains: [alice-shop.test]
    path: /shop/?page=1
    ca_file: /etc/hosting-lab/ca.pem
    timeout: 5
  register: alice_web6

- name: Every site answered
  ansible.builtin.assert:
    that: alice_web.ok
    fail_msg: "{{ alice_web.sites | dict2items | rejectattr('value.error', 'none') | items2dict }}"
"""

RETURN = r"""
sites:
  description: One result per domain, keyed by domain.
  returned: always
  type: dict
  contains:
    status:
      description: The HTTP status code, or C(-1) when no HTTP answer came.
      type: int
    title:
      description: The text of the page's first C(<title>), HTML-unescaped and with its white space collapsed;
        null if the (first 1 MiB of the) body has none.
      type: str
    error:
      description: "Null, or a short reason such as C(certificate verify failed: <reason>), C(connection refused),
        C(timed out), C(TLS failed: <reason>) or C(bad HTTP answer: <reason>)."
      type: str
    certificate:
      description: The verified certificate the server presented; null when the TLS handshake failed.
      type: dict
      contains:
        subject:
          description: The subject's common name (null if it has none).
          type: str
        issuer:
          description: The issuer's common name, else its organization.
          type: str
        not_after:
          description: End of validity, ISO 8601 in UTC (C(2026-12-05T12:00:00Z)).
          type: str
        names:
          description: The DNS names of the subjectAltName extension.
          type: list
          elements: str
    location:
      description: The C(Location) header of a redirect (status 3xx), else null.
      type: str
  sample:
    alice-shop.test:
      status: 200
      title: Alice's Shop
      error: null
      location: null
      certificate:
        subject: alice-shop.test
        issuer: R11
        not_after: "2026-03-01T08:15:02Z"
        names: [alice-shop.test, www.alice-shop.test]
    www.alice-shop.test:
      status: -1
      title: null
      error: "certificate verify failed: Hostname mismatch, certificate is not valid for 'www.alice-shop.test'."
      certificate: null
      location: null
ok:
  description: Whether every domain answered without error with a status from 200 to 399.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hosting.migration.plugins.module_utils import https_probe


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "address": {"type": "str", "required": True},
            "port": {"type": "int", "default": 443},
            "domains": {"type": "list", "elements": "str", "required": True},
            "path": {"type": "str", "default": "/"},
            "ca_file": {"type": "path"},
            "timeout": {"type": "float", "default": 10.0},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        domains = https_probe.check_request(
            params["address"], params["port"], params["domains"], params["path"], params["timeout"]
        )
        context = https_probe.trust_context(params["ca_file"])
    except ValueError as error:
        module.fail_json(msg=str(error))
    sites = {
        domain: https_probe.probe_site(
            params["address"], params["port"], domain, params["path"], context, params["timeout"]
        )
        for domain in domains
    }
    module.exit_json(changed=False, ok=all(https_probe.site_ok(site) for site in sites.values()), sites=sites)


if __name__ == "__main__":
    main()
