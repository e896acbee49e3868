# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mail as a customer's correspondent and mail client see it: a probe message sent by SMTP to a mailbox, read back
by IMAP with the mailbox's own login (through the server's master user, so no customer password is needed), then
deleted. Used by step 5 where the account is served."""

from __future__ import annotations

import imaplib
import smtplib
import time
import uuid
from email.message import EmailMessage


class MailProbeError(Exception):
    """A probe could not be sent or read back; the message says which and why."""


def probe_message(address: str, sender: str) -> tuple[str, EmailMessage]:
    message_id = f"<hm-probe-{uuid.uuid4().hex}@hosting-migration.invalid>"
    message = EmailMessage()
    message["From"], message["To"] = sender, address
    message["Subject"], message["Message-ID"] = "hosting.migration delivery probe (deleted once read)", message_id
    message.set_content("Step 5 of the migration checks that mail reaches this mailbox. It removes this message.\n")
    return message_id, message


def send(host: str, port: int, message: EmailMessage, timeout: float) -> None:
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()))
        raise MailProbeError(f"SMTP refused {message['To']}: {code} {text.decode(errors='replace')}") from None
    except (smtplib.SMTPException, OSError) as error:
        raise MailProbeError(f"SMTP to {host}:{port} failed: {error}") from None


def _login(host: str, port: int, user: str, password: str, timeout: float) -> imaplib.IMAP4:
    try:
        imap = imaplib.IMAP4(host, port, timeout=timeout)
    except OSError as error:
        raise MailProbeError(f"IMAP to {host}:{port} failed: {error}") from None
    try:
        imap.login(user, password)
    except imaplib.IMAP4.error as error:
        imap.shutdown()
        raise MailProbeError(f"IMAP login as {user.split('*')[0]} refused: {error}") from None
    return imap


def read_back(host: str, port: int, user: str, password: str, message_id: str, timeout: float) -> float:
    """Wait for the message in INBOX, delete it; the seconds it took to appear."""
    started = time.monotonic()
    imap = _login(host, port, user, password, timeout)
    try:
        while True:
            imap.select("INBOX")
            _status, data = imap.search(None, "HEADER", "Message-ID", message_id)
            found = data[0].split() if data and data[0] else []
            if found:
                for number in found:
                    imap.store(number, "+FLAGS", "\\Deleted")
                imap.expunge()
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise MailProbeError(f"the probe {message_id} was not in INBOX after {timeout:.0f} s")
            time.sleep(0.2)
    except imaplib.IMAP4.error as error:
        raise MailProbeError(f"IMAP on {host}:{port}: {error}") from None
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
