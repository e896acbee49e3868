"""The lab as the tests see it, with their own tools (never the modules'): files, rows, pages, DNS and routes, for
comparing what a step changed. Shared by the integration tests."""

from __future__ import annotations

import hashlib
import html
import http.client
import os
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from conftest import LAB, REPO, run

JOURNAL = "/var/lib/hosting-migration"
# The file each account's cron appends a line to every minute (lab/seed.yml cron_tick), relative to its home: its
# content changes while the account runs, so snapshots and manifests record that it exists, not what it holds.
CRON_TICKS = "logs/cron-ticks.log"


def playbook(name, *args, check=True, env=None):
    return run(["ansible-playbook", f"playbooks/{name}", *args], check=check, env=env)


def start_playbook(name, *args):
    """A playbook running in the background, its output collected (for kills and races)."""
    return subprocess.Popen(
        ["ansible-playbook", f"playbooks/{name}", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )


def recap(stdout):
    """The PLAY RECAP's counters per host: {host: {"ok": n, "changed": n, "failed": n, ...}}."""
    counters = {}
    for line in stdout.split("PLAY RECAP", 1)[1].splitlines():
        host, _colon, rest = line.partition(" : ")
        if rest:
            counters[host.strip()] = {k: int(v) for k, v in (field.split("=") for field in rest.split())}
    return counters


def in_host(host, script, check=True):
    return run([LAB, "exec", host, "--", "bash", "-c", script], check=check)


def in_hosts(scripts):
    """{key: (host, script)} -> {key: stdout}, the scripts run at once (each `lab exec` costs its own start-up)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = {key: pool.submit(in_host, host, script) for key, (host, script) in scripts.items()}
        return {key: future.result().stdout for key, future in done.items()}


# A mail client's view of a Maildir: a message by its unique name, wherever Dovecot keeps it (new/ or cur/) and
# whatever its flags; Dovecot's own index files (rewritten as mail is read) left out.
MAILDIR_VIEW = (
    r"sed -E 's#^(\./[^/|]+)/(new|cur)/([^:|]+)(:2,[A-Za-z]*)?#\1/msg/\3#; "
    r"s#  (\./[^/]+)/(new|cur)/([^:]+)(:2,[A-Za-z]*)?$#  \1/msg/\3#'"
)


def tree_snapshot(host, account):
    """Names, types, modes, owners, link targets, content hashes, ACLs and xattrs of the account's trees (its
    Maildirs as MAILDIR_VIEW sees them)."""
    script = f"""
set -e
cd /home/{account}
find . -printf '%p|%y|%m|%U|%G|%l|%n\\0' | sort -z | tr '\\0' '\\n'
find . -type f ! -path ./{CRON_TICKS} -print0 | sort -z | xargs -0 -r sha256sum
getfacl -R -p -s . 2>/dev/null || true
getfattr -R -d -h . 2>/dev/null || true
if [ -d /var/mail/{account} ]; then
  cd /var/mail/{account}
  {{ find . ! -name 'dovecot*' -printf '%p|%y|%m|%U|%G|%l|%n\\n'
     find . -type f ! -name 'dovecot*' -print0 | xargs -0 -r sha256sum; }} | {MAILDIR_VIEW} | sort
fi
"""
    return in_host(host, script).stdout


def mariadb_rows(mariadb, host, database):
    conn = mariadb(host, database=database)
    digest = {}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema=%s AND table_type='BASE TABLE'",
            (database,),
        )
        for (table,) in cur.fetchall():
            cur.execute(f"SELECT * FROM `{table}`")
            rows = sorted(repr(row) for row in cur.fetchall())
            digest[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return digest


def postgresql_rows(postgresql, host, database):
    conn = postgresql(host, database=database)
    digest = {}
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cur.fetchall():
            # Hashed on the server: a SQL_ASCII database's bytes need not decode in any client encoding.
            cur.execute(f'SELECT md5(t::text) FROM "{table}" t')
            rows = sorted(row[0] for row in cur.fetchall())
            digest[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return digest


# Every crontab a host holds, installed or set aside by a freeze: owner, mode and content.
CRONTABS = (
    'for f in /var/spool/cron/crontabs/* /var/lib/hosting-migration/held/*; do [ -f "$f" ] || continue; '
    'printf \'%s \' "$f"; stat -c \'%a %U %G\' "$f"; sha256sum < "$f"; done'
)


def unix_snapshot(host, account):
    """The account's Unix user (passwd and shadow entries, every group) and its installed crontab on a host."""
    script = f"""
getent passwd {account}; getent shadow {account}; id -Gn {account} | tr ' ' '\\n' | sort | paste -sd ' '
f=/var/spool/cron/crontabs/{account}
if [ -e "$f" ]; then stat -c '%a %U %G' "$f"; cat "$f"; else echo "no crontab"; fi
"""
    return in_host(host, script).stdout


def ssh_password_login(address, account, password):
    """An SSH login as the account with its Unix password (as an SFTP client logs in): "shell" if it got a shell
    that knows who it is, "refused" if the server answered and refused it (a wrong password, an expired user),
    else what went wrong. The password goes to sshpass in a file, never on a command line."""
    with tempfile.NamedTemporaryFile("w", prefix="hm-login-") as secret:
        secret.write(password)
        secret.flush()
        options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=INFO",
                   "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
                   "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=5"]  # fmt: skip
        proc = subprocess.run(["sshpass", "-f", secret.name, "ssh", *options, f"{account}@{address}", "id -un"],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    if proc.returncode == 0 and proc.stdout.strip() == account:
        return "shell"
    # sshpass 5: the password was refused; sshd says "Permission denied" or that the account has expired.
    if proc.returncode == 5 or "Permission denied" in proc.stderr or "account has expired" in proc.stderr:
        return "refused"
    return f"neither a shell nor a refusal: exit {proc.returncode}, {proc.stderr.strip()[:300]!r}"


# The lab's ACME CA (lab/hostinglab/tls.py): made anew at each `lab up`, trusted by the tests and nothing else here.
LAB_CA_FILE = os.path.join(os.environ.get("HOSTING_LAB_STATE_DIR", "/srv/hosting-lab"), "acme", "ca.pem")


class _ToAddress(http.client.HTTPSConnection):
    """HTTPS to a fixed address with the URL's host name as SNI and as the certificate's name to verify: what a
    browser does once DNS has answered that address."""

    def __init__(self, address, host, **kwargs):
        super().__init__(address.strip("[]"), 443, **kwargs)
        self.server_name = host

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)


class _HTTPSToAddress(urllib.request.HTTPSHandler):
    def __init__(self, address, cafile):
        self.address = address
        super().__init__(context=ssl.create_default_context(cafile=cafile))

    def https_open(self, req):
        def connection(host, **kwargs):
            return _ToAddress(self.address, host.split(":")[0], **kwargs)

        return self.do_open(connection, req, context=self._context)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """An opener handler that hands a redirect back as it came (its status and Location), as a test wants it."""

    def redirect_request(self, *args, **kwargs):
        return None


def https_opener(address="198.51.100.10", *handlers, cafile=LAB_CA_FILE):
    """A urllib opener whose https:// URLs go to `address`, certificates verified against the lab's CA."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _HTTPSToAddress(address, cafile), *handlers)


def http(host_header, path="/", address="198.51.100.10", data=None):
    """(status, page) as a browser shows it over HTTPS (certificate verified against the lab's CA), character
    references decoded (WordPress writes ' as &#039;)."""
    request = urllib.request.Request(f"https://{host_header}{path}", data=data)
    try:
        with https_opener(address).open(request, timeout=5) as response:
            return response.status, html.unescape(response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return error.code, html.unescape(error.read().decode(errors="replace"))


def state_snapshot(lab, mariadb, postgresql):
    """Everything a move may change, on both servers: for the check-mode test."""
    scripts = {}
    for host in ("client", "transit"):
        scripts[host, "files"] = (
            host,
            f"find /home /var/mail /etc/hosting /etc/nginx/hosting -path '/home/*/{CRON_TICKS}' -printf '%p %m\\n' "
            "-o -printf '%p %s %T@ %m\\n' | sort",
        )
        scripts[host, "maps"] = (host, "cat /etc/nginx/hosting/*.map")
        scripts[host, "users"] = (host, "getent passwd | sort; getent shadow | sort; getent group | sort")
        scripts[host, "crontabs"] = (host, f"{CRONTABS}; true")
        scripts[host, "journal"] = (host, f"find {JOURNAL} -type f 2>/dev/null | sort; true")
    outputs = in_hosts(scripts)
    snap = {}
    for host in ("client", "transit"):
        snap[host] = {name: outputs[host, name] for name in ("files", "maps", "users", "crontabs", "journal")}
        with mariadb(host).cursor() as cur:
            cur.execute("SELECT schema_name FROM information_schema.schemata ORDER BY 1")
            snap[host]["mariadb"] = cur.fetchall()
            cur.execute("SELECT user, host, JSON_VALUE(priv, '$.account_locked') FROM mysql.global_priv ORDER BY 1, 2")
            snap[host]["mariadb_users"] = cur.fetchall()
        with postgresql(host).cursor() as cur:
            cur.execute("SELECT datname FROM pg_database ORDER BY 1")
            snap[host]["pg"] = cur.fetchall()
            cur.execute("SELECT rolname, rolcanlogin FROM pg_roles ORDER BY 1")
            snap[host]["pg_roles"] = cur.fetchall()
    return snap
