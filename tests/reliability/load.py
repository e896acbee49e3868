"""A load generator that writes to an account as its users do, on the side that serves it, and keeps what was
acknowledged: rows (as the account's MariaDB user), mail (by SMTP to the server's Postfix: acknowledged by its 250
after DATA, kept by Message-ID) and files (from a session of the account's own user). Each writer keeps going
through a move: a refused write (a revoked grant, a held recipient, a session ended by the freeze) is counted,
never acknowledged, and tried again later."""

from __future__ import annotations

import smtplib
import subprocess
import threading
import time
from email.message import EmailMessage

import pymysql
from conftest import LAB

SESSION = r"""
i=0
while :; do
  i=$((i + 1)); name="$1-$i"
  printf 'file %s\n' "$name" > "$2/.$name.tmp" && mv "$2/.$name.tmp" "$2/$name" && echo "ack $name"
  sleep 0.05
done
"""


class Load:
    def __init__(self, lab, account: str, database: str, mailbox: str, files_dir: str, interval: float = 0.05):
        self.lab, self.account, self.database, self.mailbox, self.files_dir = lab, account, database, mailbox, files_dir
        self.password = next(u["password"] for u in lab.seed["accounts"][account]["db_users"]
                             if u["engine"] == "mariadb" and u["name"] == account)  # fmt: skip
        self.interval = interval
        self.side = "client"
        self.rows: list[str] = []
        self.mail: list[str] = []
        self.files: list[str] = []
        self.refused = {"rows": 0, "mail": 0, "files": 0}
        self.stop = threading.Event()
        self.session: subprocess.Popen | None = None
        self.sessions = 0
        self.threads = [threading.Thread(target=self.write_rows, daemon=True),
                        threading.Thread(target=self.deliver_mail, daemon=True),
                        threading.Thread(target=self.write_files, daemon=True)]  # fmt: skip

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def serve_from(self, side: str) -> None:
        """The account's users now reach it on `side` (its site answers from there)."""
        self.side = side

    def finish(self) -> None:
        self.stop.set()
        if self.session:
            self.session.kill()
        for thread in self.threads:
            thread.join(timeout=30)
        # Killing `lab exec` leaves the session's shell running in the host: end it there, so that nothing writes
        # while the test reads what the account holds.
        for side in ("client", "transit"):
            subprocess.run([str(LAB), "exec", side, "--", "pkill", "-KILL", "-U", self.account, "-x", "sh"],
                           capture_output=True, check=False)  # fmt: skip

    def write_rows(self) -> None:
        n, conn, conn_side = 0, None, None
        while not self.stop.is_set():
            n += 1
            tag = f"load-{n}"
            try:
                if conn is None or conn_side != self.side:
                    conn_side = self.side
                    conn = pymysql.connect(host=self.lab.hosts[conn_side].ipv4, user=self.account,
                                           password=self.password, database=self.database, autocommit=True,
                                           connect_timeout=5, read_timeout=10, write_timeout=10)  # fmt: skip
                with conn.cursor() as cursor:
                    cursor.execute("INSERT INTO audit_log (at, message) VALUES (NOW(), %s)", (tag,))
                self.rows.append(tag)
            except pymysql.MySQLError:
                self.refused["rows"] += 1
                conn = None
            time.sleep(self.interval)

    def deliver_mail(self) -> None:
        domain = self.lab.seed["accounts"][self.account]["domains"][0]["name"]
        n = 0
        while not self.stop.is_set():
            n += 1
            message_id = f"<load-{n}.{time.time_ns()}@load.test>"
            message = EmailMessage()
            message["From"], message["To"] = "load@load.test", f"{self.mailbox}@{domain}"
            message["Subject"], message["Message-ID"] = f"load {n}", message_id
            message.set_content(f"load message {n}\n")
            try:
                with smtplib.SMTP(self.lab.hosts[self.side].ipv4, 25, timeout=10) as smtp:
                    smtp.send_message(message)  # raises unless the recipient was accepted (a held one gets 450)
                self.mail.append(message_id)
            except (smtplib.SMTPException, OSError):
                self.refused["mail"] += 1
            time.sleep(self.interval)

    def write_files(self) -> None:
        while not self.stop.is_set():
            side = self.side
            self.sessions += 1
            argv = [str(LAB), "exec", side, "--", "runuser", "-u", self.account, "--", "sh", "-c", SESSION, "sh",
                    f"s{self.sessions}", self.files_dir]  # fmt: skip
            self.session = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            for line in self.session.stdout:
                if line.startswith("ack "):
                    self.files.append(line.split()[1])
                if self.stop.is_set() or self.side != side:
                    self.session.kill()
                    break
            self.session.wait()
            # The session ended (the freeze ends every session of the account) or the users moved on.
            self.refused["files"] += 1
            while not self.stop.is_set() and self.side == side:
                time.sleep(self.interval)

    def acknowledged(self) -> int:
        return len(self.rows) + len(self.mail) + len(self.files)
