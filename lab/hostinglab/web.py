"""The sites run their code: PHP-FPM with one pool per PHP account, a process supervisor running each Python
account's application server (gunicorn), and nginx passing requests to them. Each manager reads an account's
definition from a directory of the server contract (`/etc/hosting/php-fpm/<account>.conf`,
`/etc/hosting/supervisor/<account>.conf`) and re-reads it through `hosting-reload` (what account_move's
`services` option runs when a move stops or starts an account's services).

Debian 12 ships one PHP: every PHP version label of the registry (5.6, 7.4, 8.1, ...) runs on php8.2-fpm here; the
label still drives lang_prune and step 1."""

from __future__ import annotations

from .config import Host
from .proc import sh_in, start_daemon

PHP_VERSION = "8.2"
POOL_DIR = "/etc/hosting/php-fpm"
PROGRAM_DIR = "/etc/hosting/supervisor"
APP_SOCKETS = "/run/hosting-apps"
SUPERVISOR_CONF = "/etc/hosting/supervisord.conf"

# `hosting-reload php-fpm|supervisor`: the manager re-reads its directory; returns once every account defined there
# answers on its socket and every removed one is gone, so a move's switch never sends a request to a pool or app
# still starting (or a stopped one still answering).
RELOAD = rf"""#!/bin/sh
set -eu
case "${{1:-}}" in
  php-fpm)
    kill -USR2 "$(cat /run/php/php{PHP_VERSION}-fpm.pid)"
    dir={POOL_DIR} socket=/run/php/hosting-%s.sock ;;
  supervisor)
    supervisorctl -c {SUPERVISOR_CONF} update >/dev/null
    dir={PROGRAM_DIR} socket={APP_SOCKETS}/%s.sock ;;
  *) echo "usage: hosting-reload php-fpm|supervisor" >&2; exit 64 ;;
esac
i=0
while :; do
  ready=1
  for conf in "$dir"/*.conf; do
    [ -e "$conf" ] || continue
    account=$(basename "$conf" .conf)
    # shellcheck disable=SC2059 # the socket path is the format
    [ -S "$(printf "$socket" "$account")" ] || ready=0
  done
  [ "$ready" = 1 ] && exit 0
  i=$((i + 1)); [ "$i" -lt 200 ] || {{ echo "hosting-reload: $1 did not start every account in 20 s" >&2; exit 1; }}
  sleep 0.1
done
"""


def start_php_fpm(host: Host) -> None:
    sh_in(
        host.name,
        f"""
install -d -m 0755 {POOL_DIR} /run/php
install -d -m 1777 /var/log/hosting-php
conf=/etc/php/{PHP_VERSION}/fpm/php-fpm.conf
grep -q '^include={POOL_DIR}/' "$conf" || echo 'include={POOL_DIR}/*.conf' >> "$conf"
cat > /usr/local/sbin/hosting-reload <<'EOF'
{RELOAD}EOF
chmod 0755 /usr/local/sbin/hosting-reload
php-fpm{PHP_VERSION} -t 2>/dev/null
""",
    )
    start_daemon(host.name, "php-fpm", [f"/usr/sbin/php-fpm{PHP_VERSION}", "--nodaemonize"])
    pid = f"/run/php/php{PHP_VERSION}-fpm.pid"
    sh_in(host.name, f"for _ in $(seq 100); do [ -s {pid} ] && exit 0; sleep 0.1; done; exit 1")


def start_supervisor(host: Host) -> None:
    sh_in(
        host.name,
        f"""
install -d -m 0755 {PROGRAM_DIR}
install -d -m 1777 {APP_SOCKETS}
install -d -m 0755 /var/log/hosting-apps
cat > {SUPERVISOR_CONF} <<'EOF'
[unix_http_server]
file = /run/hosting-supervisor.sock
chmod = 0700

[supervisord]
logfile = /var/log/hosting-supervisord.log
pidfile = /run/hosting-supervisord.pid
nodaemon = true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix:///run/hosting-supervisor.sock

[include]
files = {PROGRAM_DIR}/*.conf
EOF
""",
    )
    start_daemon(host.name, "supervisord", ["/usr/bin/supervisord", "-c", SUPERVISOR_CONF])
    sh_in(host.name, "for _ in $(seq 100); do [ -S /run/hosting-supervisor.sock ] && break; sleep 0.1; done")
    sh_in(host.name, "hosting-reload supervisor")  # every application answers on its socket


def service_files(account: dict) -> dict[str, str]:
    """What the provider's panel writes for an account: a pool if it has a PHP site, a program if a Python one."""
    languages = {site["language"] for site in account["sites"]}
    files = {}
    if "php" in languages:
        files[f"{POOL_DIR}/{account['name']}.conf"] = pool(account)
    if "python" in languages:
        files[f"{PROGRAM_DIR}/{account['name']}.conf"] = program(account)
    return files


def pool(account: dict) -> str:
    """An account's PHP-FPM pool: its own user, its socket, its sessions in its home (they travel with it); its
    error log stays with the server, as the web server's logs do."""
    name = account["name"]
    return f"""[{name}]
user = {name}
group = {name}
listen = /run/php/hosting-{name}.sock
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
pm = ondemand
pm.max_children = 5
pm.process_idle_timeout = 20s
chdir = /
php_admin_value[session.save_path] = /home/{name}/.php/sessions
php_admin_value[error_log] = /var/log/hosting-php/{name}.log
php_admin_flag[log_errors] = on
"""


def program(account: dict) -> str:
    """An account's application server under the supervisor: gunicorn serving ~/app/app.py as its own user."""
    name = account["name"]
    return f"""[program:{name}]
command = /usr/bin/gunicorn --workers 2 --bind unix:{APP_SOCKETS}/{name}.sock --umask 0000 app:app
user = {name}
directory = /home/{name}/app
environment = HOME="/home/{name}"
autostart = true
autorestart = true
stopasgroup = true
killasgroup = true
stdout_logfile = /var/log/hosting-apps/{name}.log
redirect_stderr = true
"""


def php_string(value: str) -> str:
    """A PHP single-quoted literal: only the backslash and the quote are special."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _db_user(account: dict, engine: str) -> dict:
    return next(u for u in account["db_users"] if u["engine"] == engine and u["access"] in ("all", "owner"))


def _write(host: Host, path: str, text: str, owner: str, mode: str) -> None:
    directory = path.rsplit("/", 1)[0]
    sh_in(
        host.name,
        f"[ -d {directory} ] || install -d -o {owner} -g {owner} -m 0755 {directory}\n"
        f"install -o {owner} -g {owner} -m {mode} /dev/stdin {path}",
        input=text,
    )


WORDPRESS_INSTALL = r"""<?php
// Non-interactive install: the same functions wp-admin/install.php calls, without mailing the new admin.
define('WP_INSTALLING', true);
$_SERVER['HTTP_HOST'] = getenv('WP_DOMAIN');
$_SERVER['REQUEST_URI'] = '/';
function wp_new_blog_notification() {}
require __DIR__ . '/wp-load.php';
require ABSPATH . 'wp-admin/includes/upgrade.php';
$admin = getenv('WP_ADMIN');
wp_install(getenv('WP_TITLE'), $admin, $admin . '@' . getenv('WP_DOMAIN'), true, '', getenv('WP_PASSWORD'));
update_option('blogdescription', '');
wp_insert_post(['post_title' => getenv('WP_POST'), 'post_content' => 'Stored in MariaDB, shown on the front page.',
                'post_status' => 'publish', 'post_author' => 1]);
echo "installed\n";
"""


def wordpress(host: Host, account: dict, site: dict) -> None:
    """alice's shop: WordPress from Debian's package, copied into her document root, installed on her MariaDB."""
    import secrets

    name, docroot, domain = account["name"], site["document_root"], site["domain"]
    user, wp = _db_user(account, "mariadb"), site["wordpress"]
    database = next(d["name"] for d in account["databases"] if d["engine"] == "mariadb")
    salts = "".join(
        f"define({php_string(key)}, {php_string(secrets.token_urlsafe(48))});\n"
        for key in ("AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT", "SECURE_AUTH_SALT",
                    "LOGGED_IN_SALT", "NONCE_SALT")
    )  # fmt: skip
    config = f"""<?php
define('DB_NAME', {php_string(database)});
define('DB_USER', {php_string(user["name"])});
define('DB_PASSWORD', {php_string(user["password"])});
define('DB_HOST', '127.0.0.1');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{salts}$table_prefix = 'wp_';
define('WP_HOME', 'https://{domain}');
define('WP_SITEURL', 'https://{domain}');
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('WP_CONTENT_DIR', __DIR__ . '/wp-content');
if (!defined('ABSPATH')) {{
    define('ABSPATH', __DIR__ . '/');
}}
require_once ABSPATH . 'wp-settings.php';
"""
    sh_in(
        host.name,
        f"""
cp -rL /usr/share/wordpress/. {docroot}/
rm -f {docroot}/index.html {docroot}/wp-config.php
chown -R {name}:{name} {docroot}
""",
    )
    _write(host, f"{docroot}/wp-config.php", config, name, "0640")
    sh_in(host.name, f"chgrp www-data {docroot}/wp-config.php")
    _write(host, f"{docroot}/.wp-install.php", WORDPRESS_INSTALL, name, "0600")
    env = {
        "WP_DOMAIN": domain,
        "WP_TITLE": site["title"],
        "WP_ADMIN": wp["admin"],
        "WP_PASSWORD": wp["password"],
        "WP_POST": wp["post"],
    }
    # The password reaches php through the environment of a process started from standard input, not argv.
    exports = "".join(f"export {key}={sh_quote(value)}\n" for key, value in env.items())
    sh_in(
        host.name,
        f"set -a; . /dev/stdin; set +a; cd {docroot}; rc=0; "
        f"runuser -u {name} -- php -d display_errors=stderr .wp-install.php >/dev/null || rc=$?; "
        f"rm -f .wp-install.php; exit $rc",
        input=exports,
    )
    # WordPress's cache in memory, per request (its own non-persistent cache, loaded as a drop-in): transients
    # then never reach the database, so a page view writes nothing there and a move's before/after compare holds.
    _write(host, f"{docroot}/wp-content/object-cache.php", "<?php\nrequire_once ABSPATH . WPINC . '/cache.php';\n",
           name, "0644")  # fmt: skip


def sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def php_blog(host: Host, account: dict, site: dict) -> None:
    """carol's blog: a page of PHP reading her MariaDB database (its credentials in her home, outside the docroot)."""
    name, docroot = account["name"], site["document_root"]
    user = _db_user(account, "mariadb")
    database = next(d["name"] for d in account["databases"] if d["engine"] == "mariadb")
    _write(
        host,
        f"/home/{name}/etc/db.php",
        f"<?php\nreturn ['user' => {php_string(user['name'])}, 'password' => {php_string(user['password'])}, "
        f"'database' => {php_string(database)}];\n",
        name,
        "0600",
    )
    page = f"""<?php
$db = require '/home/{name}/etc/db.php';
$link = new mysqli('127.0.0.1', $db['user'], $db['password'], $db['database']);
$posts = $link->query('SELECT title FROM posts ORDER BY id LIMIT 3');
$title = {php_string(site["title"])};
echo "<!doctype html>\\n<html><head><title>$title</title></head>\\n<body><h1>$title</h1><ul>";
while ($row = $posts->fetch_row()) {{
    echo '<li>' . htmlspecialchars($row[0]) . '</li>';
}}
echo "</ul><p>served for {site["domain"]} by PHP " . PHP_VERSION . "</p></body></html>\\n";
"""
    _write(host, f"{docroot}/index.php", page, name, "0644")
    sh_in(host.name, f"rm -f {docroot}/index.html")


FLASK_APP = r'''"""bob's garden: plants read from his PostgreSQL database, visits written to it (peer login, socket)."""
import html
import json

import psycopg2
from flask import Flask, request

app = Flask(__name__)
with open("/home/{account}/app/site.json", encoding="utf-8") as handle:
    SITE = json.load(handle)


def connect():
    return psycopg2.connect(dbname=SITE["database"])


@app.get("/")
def index():
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM plants ORDER BY id LIMIT 3")
            plants = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT count(*) FROM visits")
            visits = cur.fetchone()[0]
    finally:
        conn.close()
    title = html.escape(SITE["title"], quote=False)
    items = "".join(f"<li>{html.escape(p)}</li>" for p in plants)
    return (f"<!doctype html>\n<html><head><title>{title}</title></head>\n<body><h1>{title}</h1><ul>{items}</ul>"
            f"<p>{visits} visits</p><p>served for {SITE['domain']} by Python</p></body></html>\n")


@app.post("/visit")
def visit():
    conn = connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO visits (plant_id, at, note) VALUES (1, now(), %s) RETURNING id",
                        (request.form.get("note", "web")[:200],))
            number = cur.fetchone()[0]
    finally:
        conn.close()
    return f"visit {number}\n"
'''


def flask_app(host: Host, account: dict, site: dict) -> None:
    """bob's garden: a Flask application under gunicorn, on his PostgreSQL database."""
    import json

    name = account["name"]
    database = next(d["name"] for d in account["databases"] if d["engine"] == "postgresql")
    _write(host, f"/home/{name}/app/app.py", FLASK_APP.replace("{account}", name), name, "0644")
    site_config = {"title": site["title"], "domain": site["domain"], "database": database}
    _write(host, f"/home/{name}/app/site.json", json.dumps(site_config) + "\n", name, "0600")
    sh_in(host.name, f"rm -f {site['document_root']}/index.html")


APPS = {"wordpress": wordpress, "php_blog": php_blog, "flask": flask_app}


def install_apps(host: Host, seeded: list[dict]) -> None:
    """Each site's application, once its databases are seeded (and before the supervisor starts the servers)."""
    for account in seeded:
        for site in account["sites"]:
            if site.get("app"):
                APPS[site["app"]](host, account, site)
