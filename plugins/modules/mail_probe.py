#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mail_probe
short_description: Send a probe mail to each mailbox of an account by SMTP and read it back by IMAP
version_added: 0.2.0
description:
  - Step 5 of the migration, run where the account is served. For each mailbox C(<mailbox>@<domain>), sends one
    message with a unique Message-ID through the server's SMTP service, logs in by IMAP as that mailbox and waits
    for the message in INBOX, then deletes it.
  - The IMAP login goes through the server's master user (Dovecot's C(mailbox@domain*master) form), so the check
    needs no customer's password and still proves that the mailbox itself can log in and read its mail.
  - A mailbox whose account is held by a freeze answers SMTP with a temporary failure (4xx) and refuses logins for
    the moment; the probe reports that, it does not retry beyond O(timeout).
  - The probe message is deleted once seen; a probe that never arrived is reported, and may arrive later.
extends_documentation_fragment:
  - hosting.migration.account
options:
  domain:
    description: The mail domain of the mailboxes.
    type: str
    required: true
  mailboxes:
    description: Mailbox names (the part before C(@)).
    type: list
    elements: str
    required: true
  smtp_host:
    description: Where to send the probes.
    type: str
    default: 127.0.0.1
  smtp_port:
    description: SMTP port.
    type: int
    default: 25
  imap_host:
    description: Where to read them back.
    type: str
    default: 127.0.0.1
  imap_port:
    description: IMAP port.
    type: int
    default: 143
  login_user:
    description: The IMAP server's master user.
    type: str
    required: true
  login_password:
    description: Its password; never logged or returned.
    type: str
    required: true
  login_separator:
    description: What joins the mailbox address and the master user in the login name.
    type: str
    default: "*"
  sender:
    description: Envelope and header sender of the probes.
    type: str
    default: postmaster@hosting-migration.invalid
  timeout:
    description: Seconds to wait for each probe to appear in INBOX (and for each connection).
    type: float
    default: 20
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Under check mode nothing is sent; every mailbox is reported as skipped.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
    details: Always C(changed=false) - each probe is deleted once read, so the mailboxes end as they were.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Does mail reach alice's mailboxes where she is served?
  hosting.migration.mail_probe:
    account: alice
    domain: alice-shop.test
    mailboxes: [info, sales]
    login_user: probe
    login_password: "{{ vault_mail_probe_password }}"
  delegate_to: "{{ where_alice_lives }}"
  register: mail
"""

RETURN = r"""
mailboxes:
  description: One entry per mailbox.
  returned: always
  type: list
  elements: dict
  sample:
    - {mailbox: info, address: info@alice-shop.test, delivered: true, seconds: 0.31, problem: null}
    - {mailbox: sales, address: sales@alice-shop.test, delivered: false, seconds: null,
       problem: "SMTP refused sales@alice-shop.test: 450 4.2.0 ..."}
ok:
  description: Whether every probe was delivered and read back (true under check mode).
  returned: always
  type: bool
problems:
  description: One line per mailbox that failed, saying why.
  returned: always
  type: list
  elements: str
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hosting.migration.plugins.module_utils import mail_probe
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

MAILBOX_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
DOMAIN_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "account": {"type": "str", "required": True},
            "domain": {"type": "str", "required": True},
            "mailboxes": {"type": "list", "elements": "str", "required": True},
            "smtp_host": {"type": "str", "default": "127.0.0.1"},
            "smtp_port": {"type": "int", "default": 25},
            "imap_host": {"type": "str", "default": "127.0.0.1"},
            "imap_port": {"type": "int", "default": 143},
            "login_user": {"type": "str", "required": True},
            "login_password": {"type": "str", "required": True, "no_log": True},
            "login_separator": {"type": "str", "default": "*"},
            "sender": {"type": "str", "default": "postmaster@hosting-migration.invalid"},
            "timeout": {"type": "float", "default": 20.0},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        validate_account_name(params["account"])
    except ValueError as error:
        module.fail_json(msg=str(error))
    domain = params["domain"]
    if not DOMAIN_RE.match(domain):
        module.fail_json(msg=f"invalid domain {domain!r}: lower-case labels of letters, digits and '-'")
    odd = [box for box in params["mailboxes"] if not MAILBOX_RE.match(box)]
    if odd:
        module.fail_json(msg=f"invalid mailbox names {odd!r}: expected ^[a-z0-9][a-z0-9._-]{{0,63}}$")
    if re.search(r"[\s@]", params["login_user"]) or not params["login_separator"]:
        module.fail_json(msg="login_user must be a plain name and login_separator not empty")

    results = []
    for box in params["mailboxes"]:
        address = f"{box}@{domain}"
        entry = {"mailbox": box, "address": address, "delivered": False, "seconds": None, "problem": None}
        if module.check_mode:
            entry["problem"] = "skipped (check mode)"
            results.append(entry)
            continue
        message_id, message = mail_probe.probe_message(address, params["sender"])
        try:
            mail_probe.send(params["smtp_host"], params["smtp_port"], message, params["timeout"])
            entry["seconds"] = round(
                mail_probe.read_back(
                    params["imap_host"],
                    params["imap_port"],
                    f"{address}{params['login_separator']}{params['login_user']}",
                    params["login_password"],
                    message_id,
                    params["timeout"],
                ),
                3,
            )
            entry["delivered"] = True
        except mail_probe.MailProbeError as error:
            entry["problem"] = str(error)
        results.append(entry)
    problems = [] if module.check_mode else [f"{r['address']}: {r['problem']}" for r in results if r["problem"]]
    module.exit_json(changed=False, mailboxes=results, ok=not problems, problems=problems)


if __name__ == "__main__":
    main()
