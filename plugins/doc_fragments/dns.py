# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options of the modules that work on DNS; the argument spec is dns_argument_spec() in module_utils/dns_zone.py.
    DOCUMENTATION = r"""
options:
  start_servers:
    description:
      - Addresses where resolution starts when the module looks up a zone's authoritative servers (a resolver's
        root hints). Defaults to the IANA root servers; a lab or a closed network gives its own registry's servers.
    type: list
    elements: str
  query_timeout:
    description: Seconds to wait for one DNS answer before trying the next server.
    type: float
    default: 3.0
  wait_timeout:
    description:
      - After a change, seconds to wait until every authoritative server of the zone serves it with the same SOA
        serial. The module fails when they still disagree after that time (the change itself was accepted).
    type: int
    default: 60
requirements:
  - dnspython (Debian package C(python3-dnspython)) on the host the module runs on
"""
