"""The lab's mail as a customer's correspondents and mail clients meet it (issue 18): SMTP in on the client's public
addresses, Dovecot IMAP with each mailbox's own password, a freeze's hold answering 4xx (never a bounce), the backup
MX queueing while the client's Postfix is down, and step 5's mail_probe module. Real clients: smtplib, imaplib."""

from __future__ import annotations

import imaplib
import smtplib
import time
import uuid
from email.message import EmailMessage

import pytest
from lab_state import in_host

pytestmark = pytest.mark.lab

CLIENT_V4, CLIENT_V6 = "198.51.100.10", "2001:db8:77::10"


def mailboxes(lab):
    """(account, address, password) of every seeded mailbox."""
    for name, account in lab.seed["accounts"].items():
        domain = account["domains"][0]["name"]
        for box in account["mailboxes"]:
            yield name, f"{box}@{domain}", lab.seed["mailbox_password"].format(account=name, mailbox=box)


def message(to: str, marker: str = "") -> tuple[str, EmailMessage]:
    message_id = f"<test-{marker}{uuid.uuid4().hex}@tests.invalid>"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"], mail["Message-ID"] = "tests@tests.invalid", to, "test", message_id
    mail.set_content("a test message\n")
    return message_id, mail


def send(address: str, mail: EmailMessage, port: int = 25) -> None:
    with smtplib.SMTP(address, port, timeout=10) as smtp:
        smtp.send_message(mail)


def imap_count(address: str, user: str, password: str, message_id: str, wait: float = 15.0) -> int:
    """How many messages of INBOX carry the Message-ID, once it has appeared (or after `wait` seconds)."""
    deadline = time.monotonic() + wait
    imap = imaplib.IMAP4(address, 143, timeout=10)
    try:
        imap.login(user, password)
        while True:
            imap.select("INBOX", readonly=True)
            _status, data = imap.search(None, "HEADER", "Message-ID", message_id)
            found = data[0].split() if data and data[0] else []
            if found or time.monotonic() > deadline:
                return len(found)
            time.sleep(0.2)
    finally:
        imap.logout()


def test_smtp_to_each_mailbox_is_read_back_by_imap_with_its_password(lab):
    sent = []
    for i, (_account, address, password) in enumerate(mailboxes(lab)):
        server = (CLIENT_V4, CLIENT_V6)[i % 2]  # both families of the client's public addresses
        message_id, mail = message(address)
        send(server, mail)
        sent.append((server, address, password, message_id))
    for server, address, password, message_id in sent:
        assert imap_count(server, address, password, message_id) == 1, f"{address} via {server}"


def test_imap_refuses_a_wrong_password_and_smtp_an_unknown_mailbox_or_foreign_domain(lab):
    _account, address, _password = next(mailboxes(lab))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_count(CLIENT_V4, address, "not-the-password", "<none@x>", wait=0)
    for to in (f"nobody-here@{address.split('@')[1]}", "someone@not-hosted.example"):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(CLIENT_V4, message(to)[1])
        code = next(iter(refused.value.recipients.values()))[0]
        assert 500 <= code < 600, f"{to}: {code}"


@pytest.fixture
def held_alice(lab):
    in_host("client", "touch /etc/hosting/mail-hold/alice")
    yield
    in_host("client", "rm -f /etc/hosting/mail-hold/alice")


def test_a_held_account_defers_mail_with_4xx_and_refuses_logins_for_now(lab, held_alice):
    address, password = "info@alice-shop.test", lab.seed["mailbox_password"].format(account="alice", mailbox="info")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(CLIENT_V4, message(address)[1])
    code, text = next(iter(refused.value.recipients.values()))
    assert code == 450, (code, text)
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        imap_count(CLIENT_V4, address, password, "<none@x>", wait=0)
    # bob is not held: his mail still goes through.
    bob = next(m for m in mailboxes(lab) if m[0] == "bob")
    message_id, mail = message(bob[1])
    send(CLIENT_V4, mail)
    assert imap_count(CLIENT_V4, bob[1], bob[2], message_id) == 1


@pytest.fixture
def client_postfix_stopped(lab):
    stop = "postfix stop >/dev/null 2>&1; for _ in $(seq 50); do postfix status 2>/dev/null || break; sleep 0.1; done"
    in_host("client", stop)
    yield
    in_host("client", "postfix status 2>/dev/null || setsid postfix start >/dev/null 2>&1")


def test_a_backup_mx_queues_while_the_client_is_down_and_delivers_once_it_is_back(lab, client_postfix_stopped):
    _account, address, password = next(m for m in mailboxes(lab) if m[0] == "bob")
    message_id, mail = message(address, "mx1-")
    send(lab.hosts["mx1"].ipv4, mail)
    time.sleep(2)
    queued = in_host("mx1", "postqueue -j").stdout
    assert address in queued, f"mx1 did not keep the mail queued while the client was down: {queued!r}"
    in_host("client", "setsid postfix start >/dev/null 2>&1")
    assert imap_count(CLIENT_V4, address, password, message_id, wait=30) == 1
    time.sleep(2)  # a second delivery of the same queue entry would show up by now
    assert imap_count(CLIENT_V4, address, password, message_id, wait=0) == 1
    assert in_host("mx1", "postqueue -j").stdout.strip() == ""


def test_mail_probe_module_reads_back_by_imap_and_reports_a_held_mailbox(lab, module):
    probe = {
        "account": "carol",
        "domain": "carol-blog.test",
        "mailboxes": ["carol"],
        "login_user": lab.vars["hosting_mail_probe_user"],
        "login_password": lab.vars["hosting_mail_probe_password"],
    }
    result, _proc = module("client", "hosting.migration.mail_probe", probe)
    assert result["_status"] == "ok" and result["ok"] and not result["changed"], result
    assert result["mailboxes"][0]["delivered"] is True
    assert lab.vars["hosting_mail_probe_password"] not in str(result)
    # The probe deleted its message: INBOX holds none of them.
    left = in_host("client", "grep -rl 'hm-probe-' /var/mail/carol/carol/new /var/mail/carol/carol/cur || true")
    assert left.stdout.strip() == ""
    checked, _proc = module("client", "hosting.migration.mail_probe", probe, check_mode=True)
    assert checked["ok"] and checked["mailboxes"][0]["problem"] == "skipped (check mode)"
    in_host("client", "touch /etc/hosting/mail-hold/carol")
    try:
        held, _proc = module("client", "hosting.migration.mail_probe", {**probe, "timeout": 3})
    finally:
        in_host("client", "rm -f /etc/hosting/mail-hold/carol")
    assert held["_status"] == "ok" and held["ok"] is False, held
    assert "450" in held["problems"][0], held["problems"]
    bad, _proc = module("client", "hosting.migration.mail_probe", {**probe, "mailboxes": ["../etc"]})
    assert bad["_status"] == "failed" and "invalid mailbox names" in bad["msg"]
