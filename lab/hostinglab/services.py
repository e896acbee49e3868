"""The daemons of each lab host, configured and started inside the host. Debian's maintainer scripts start
nothing here (no systemd), so each daemon is started directly and waited for on its port."""

from __future__ import annotations

import socket
import time

from .config import GENERATION, STATE_DIR, Host, Lab
from .proc import LabError, sh_in, start_daemon

CONTROLLER_KEY = STATE_DIR / "controller" / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "controller" / "known_hosts"

MARIADB_SETTINGS = {
    # An older generation's permissive server: silent truncation, zero dates, oversize rows accepted.
    "2020": {
        "sql_mode": "''",
        "innodb_strict_mode": "OFF",
        "character-set-server": "latin1",
        "collation-server": "latin1_swedish_ci",
    },
    # The new architecture: strict modes and utf8mb4 by default.
    "2024": {
        "sql_mode": "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
        "NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY",
        "innodb_strict_mode": "ON",
        "character-set-server": "utf8mb4",
        "collation-server": "utf8mb4_unicode_ci",
    },
}

POSTGRESQL_SETTINGS = {
    "2020": {"password_encryption": "md5"},
    "2024": {"password_encryption": "scram-sha-256"},
}
# pg_hba's `md5` method also accepts scram verifiers; `scram-sha-256` refuses md5 hashes (the new generation).
POSTGRESQL_HBA_METHOD = {"2020": "md5", "2024": "scram-sha-256"}


def wait_port(address: str, port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise LabError(f"{what} did not answer on {address}:{port} within {timeout:.0f}s (see {STATE_DIR}/logs)")


def mariadb_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def pg_literal(value: str) -> str:
    # standard_conforming_strings is on: only the quote needs doubling.
    return "'" + value.replace("'", "''") + "'"


def mariadb_sql(host: str, script: str) -> str:
    """Run SQL as the host's root over its socket (unix_socket auth: no password anywhere)."""
    return sh_in(host, "mariadb --protocol=socket --batch --skip-column-names", input=script)


def psql(host: str, script: str, database: str = "postgres") -> str:
    return sh_in(
        host,
        f"runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -d {database}",
        input=script,
    )


def start_sshd(host: Host) -> None:
    """root by the controller's key only; the accounts' users by password too, as on a hosting server (SFTP)."""
    public_key = CONTROLLER_KEY.with_suffix(".pub").read_text().strip()
    sh_in(
        host.name,
        f"""
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A -q
printf '%s\\n' 'PasswordAuthentication yes' 'KbdInteractiveAuthentication no' \
    'PermitRootLogin prohibit-password' > /etc/ssh/sshd_config.d/hosting-lab.conf
install -d -m 0700 /root/.ssh
printf '%s\\n' '{public_key}' > /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
install -d -m 0755 /run/sshd
""",
    )
    start_daemon(host.name, "sshd", ["/usr/sbin/sshd", "-D", "-e"])
    wait_port(host.ipv4, 22, f"sshd on {host.name}")


def host_key_line(host: Host) -> str:
    key_type, key = sh_in(host.name, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    return f"{host.ipv4},{host.ipv6} {key_type} {key}\n"


def start_mariadb(host: Host, lab: Lab, generation: str | None = None) -> None:
    """A fresh MariaDB with the settings of `generation` (default: the host's generation in the lab's design)."""
    generation = generation or GENERATION[host.name]
    settings = "\n".join(f"{k} = {v}" for k, v in MARIADB_SETTINGS[generation].items())
    sh_in(
        host.name,
        f"""
cat > /etc/mysql/mariadb.conf.d/90-hosting-lab.cnf <<'EOF'
[mariadbd]
bind-address = *
skip-name-resolve
log_error = /var/log/mysql/error.log
{settings}
EOF
rm -rf /var/lib/mysql
install -d -o mysql -g mysql -m 0750 /var/lib/mysql /var/log/mysql /run/mysqld
mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
    --auth-root-authentication-method=socket >/dev/null
""",
    )
    start_daemon(host.name, "mariadb", ["/usr/sbin/mariadbd", "--user=mysql"])
    wait_port(host.ipv4, 3306, f"MariaDB on {host.name}")
    admin = lab.vars["hosting_db_admin_user"]
    mariadb_sql(
        host.name,
        f"CREATE USER '{admin}'@'%' IDENTIFIED BY {mariadb_literal(lab.vars['hosting_db_admin_password'])};\n"
        f"GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%' WITH GRANT OPTION;\n",
    )


def start_postgresql(host: Host, lab: Lab, generation: str | None = None) -> None:
    generation = generation or GENERATION[host.name]
    settings = "\n".join(f"{k} = '{v}'" for k, v in POSTGRESQL_SETTINGS[generation].items())
    method = POSTGRESQL_HBA_METHOD[generation]
    sh_in(
        host.name,
        f"""
install -d -o postgres -g postgres -m 2775 /run/postgresql
pg_dropcluster 15 main >/dev/null 2>&1 || true
pg_createcluster --locale C.UTF-8 15 main >/dev/null
cat > /etc/postgresql/15/main/conf.d/90-hosting-lab.conf <<'EOF'
listen_addresses = '*'
{settings}
EOF
printf '%s\\n' 'host all all 10.77.0.0/24 {method}' 'host all all fd77::/64 {method}' \
    >> /etc/postgresql/15/main/pg_hba.conf
pg_ctlcluster 15 main start
""",
    )
    wait_port(host.ipv4, 5432, f"PostgreSQL on {host.name}")
    # scram even on the md5 generation: the admin's login must not depend on the server's default.
    admin = lab.vars["hosting_db_admin_user"]
    psql(
        host.name,
        "SET password_encryption = 'scram-sha-256';\n"
        f"CREATE ROLE {admin} LOGIN SUPERUSER PASSWORD {pg_literal(lab.vars['hosting_db_admin_password'])};\n",
    )


NGINX_SITE = r"""# The hosting web front: one map entry per domain. docroots.map serves an account locally;
# backends.map sends a moved account's domains to the server that now holds it (the client keeps answering
# on its own IPs), or to the maintenance page while the account is frozen.
map $host $hosting_docroot {
    hostnames;
    default /var/www/html;
    include /etc/nginx/hosting/docroots.map;
}
map $host $hosting_backend {
    hostnames;
    default local;
    include /etc/nginx/hosting/backends.map;
}
# The account a document root belongs to: its PHP-FPM pool and its application server are named after it.
map $hosting_docroot $hosting_account {
    "~^/home/(?<name>[a-z][a-z0-9]*)/" $name;
    default "";
}
# What the visitor used: a front that proxies a moved account ends its TLS and says so (port 8080 below).
map $http_x_forwarded_proto $hosting_proto {
    https https;
    default $scheme;
}
map $hosting_proto $hosting_https {
    https on;
    default "";
}
# Port 80: ACME HTTP-01 challenges (served, or proxied, like the rest of the domain); everything else to HTTPS.
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name _;
    root $hosting_docroot;
    location /.well-known/acme-challenge/ {
        include /etc/nginx/hosting/front.conf;
        try_files $uri =404;
    }
    location / {
        return 301 https://$host$request_uri;
    }
}
# HTTPS: one server per domain with its account's certificate (tls.conf, written by hosting-tls sync); names
# without one get this server and the host's own certificate.
server {
    listen 443 ssl default_server;
    listen [::]:443 ssl default_server;
    server_name _;
    ssl_certificate /etc/nginx/hosting/default.pem;
    ssl_certificate_key /etc/nginx/hosting/default.key;
    include /etc/nginx/hosting/site.conf;
}
include /etc/nginx/hosting/tls.conf;
# The backend port: what a front proxies a moved account to, its TLS ended at the front.
server {
    listen 8080;
    listen [::]:8080;
    server_name _;
    include /etc/nginx/hosting/site.conf;
}
"""
# An account's site, served over HTTPS or on the backend port.
NGINX_SITE_BODY = r"""root $hosting_docroot;
# A directory without an index file is the account's application's (an absolute last index is a redirect).
index index.php index.html /hosting-app;
error_page 503 /hosting-maintenance.html;
location = /hosting-maintenance.html {
    root /var/www/hosting;
    internal;
}
# Files first; what is not a file goes to the account's PHP (index.php) or to its application server.
location / {
    include /etc/nginx/hosting/front.conf;
    try_files $uri $uri/ @dynamic;
}
location @dynamic {
    if (-f $document_root/index.php) {
        rewrite ^ /index.php last;
    }
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $hosting_proto;
    proxy_pass http://unix:/run/hosting-apps/$hosting_account.sock:$request_uri;
}
location = /hosting-app {
    internal;
    include /etc/nginx/hosting/front.conf;
    proxy_pass http://unix:/run/hosting-apps/$hosting_account.sock:$request_uri;
}
location ~ \.php$ {
    include /etc/nginx/hosting/front.conf;
    try_files $uri =404;
    include fastcgi_params;
    fastcgi_param HTTPS $hosting_https if_not_empty;
    fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
    fastcgi_pass unix:/run/php/hosting-$hosting_account.sock;
}
"""
# In every location that serves an account: its maintenance page while frozen, the server that holds it once moved.
NGINX_FRONT = r"""proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $hosting_proto;
if ($hosting_backend = "maintenance") {
    return 503;
}
if ($hosting_backend != "local") {
    proxy_pass http://$hosting_backend;
}
"""


def start_nginx(host: Host) -> None:
    sh_in(
        host.name,
        f"""
rm -f /etc/nginx/sites-enabled/default
install -d /etc/nginx/hosting /var/www/html /var/www/hosting
printf '%s\\n' '<html><head><title>Maintenance</title></head>' \
    '<body>This site is being moved and is back in a few seconds.</body></html>' \
    > /var/www/hosting/hosting-maintenance.html
touch /etc/nginx/hosting/docroots.map /etc/nginx/hosting/backends.map /etc/nginx/hosting/tls.conf
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 -subj /CN={host.fqdn} \
    -keyout /etc/nginx/hosting/default.key -out /etc/nginx/hosting/default.pem 2>/dev/null
printf '%s\\n' '<html><head><title>{host.fqdn}</title></head><body>{host.fqdn}</body></html>' \
    > /var/www/html/index.html
cat > /etc/nginx/conf.d/hosting.conf <<'EOF'
{NGINX_SITE}EOF
cat > /etc/nginx/hosting/front.conf <<'EOF'
{NGINX_FRONT}EOF
cat > /etc/nginx/hosting/site.conf <<'EOF'
{NGINX_SITE_BODY}EOF
nginx -t -q
""",
    )
    start_daemon(host.name, "nginx", ["/usr/sbin/nginx", "-g", "daemon off;"])
    wait_port(host.ipv4, 80, f"nginx on {host.name}")


def reload_nginx(host: Host) -> None:
    sh_in(host.name, "nginx -t -q && nginx -s reload")


def start_cron(host: Host) -> None:
    """Debian's cron, running the accounts' crontabs (/var/spool/cron/crontabs) and nothing of the machine's own:
    the system crontabs (daily apt and logrotate runs, e2scrub) are removed from this host's /etc."""
    sh_in(host.name, "rm -f /etc/crontab /etc/cron.d/*")
    start_daemon(host.name, "cron", ["/usr/sbin/cron", "-f"])


def start_bind(host: Host, lab: Lab, zones: dict[str, str]) -> None:
    """zones: zone name -> zone file text. Every zone but the registry's (`test`, the parent of all the others)
    takes RFC 2136 updates signed with the lab's TSIG key."""
    key = lab.vars["hosting_tsig_key_name"]
    signed = f'allow-update {{ key "{key}"; }};'
    updates = {zone: signed if "." in zone else "allow-update { none; };" for zone in zones}
    zone_blocks = "\n".join(
        f'zone "{zone}" {{ type primary; file "/var/lib/bind/{zone}.zone"; {updates[zone]} }};'
        for zone in sorted(zones)
    )
    writes = "\n".join(f"cat > /var/lib/bind/{zone}.zone <<'EOF'\n{text}EOF" for zone, text in zones.items())
    sh_in(
        host.name,
        f"""
rm -f /var/lib/bind/*.jnl
{writes}
chown -R bind:bind /var/lib/bind
cat > /etc/bind/named.conf <<'EOF'
key "{key}" {{ algorithm {lab.vars["hosting_tsig_algorithm"]}; secret "{lab.vars["hosting_tsig_secret"]}"; }};
options {{
    directory "/var/cache/bind";
    pid-file "/run/named/named.pid";
    listen-on {{ any; }};
    listen-on-v6 {{ any; }};
    recursion no;
    dnssec-validation no;
    allow-transfer {{ key "{key}"; 10.77.0.0/24; fd77::/64; 127.0.0.1; }};
}};
{zone_blocks}
EOF
install -d -o bind -g bind /run/named /var/cache/bind
named-checkconf /etc/bind/named.conf
""",
    )
    start_daemon(host.name, "named", ["/usr/sbin/named", "-f", "-u", "bind", "-c", "/etc/bind/named.conf"])
    wait_port(host.ipv4, 53, f"BIND on {host.name}")
