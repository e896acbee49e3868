"""The seeded provider: accounts (files, mail, databases, users and grants), the client's server contract and the
DNS zones, all derived from lab/seed.yml plus the lab parameters."""

from __future__ import annotations

import json
from pathlib import Path

from . import web
from .config import Host, Lab
from .proc import run_in
from .services import mariadb_literal, mariadb_sql, pg_literal, psql

INHOST_SCRIPT = Path(__file__).with_name("inhost_contract.py")
ROW_BYTES_BIG = 256  # approximate on-disk bytes per row of the big tables, to size them in MB


def accounts(lab: Lab, extra_accounts: int) -> list[dict]:
    """Every account with its derived fields (name, document roots), the extra ones appended."""
    seeded = [{"name": name, **spec} for name, spec in lab.seed["accounts"].items()]
    template = lab.seed["extra_account"]
    for i in range(1, extra_accounts + 1):
        name = f"extra{i:03d}"
        seeded.append(
            {
                "name": name,
                "uid": template["uid_base"] + i,
                "domains": [{"name": f"{name}.test", "provider_dns": True}],
                "sites": [{"domain": f"{name}.test", "title": f"Site of {name}", **template["sites_language"]}],
                "mailboxes": dict(template["mailboxes"]),
                "databases": [{"engine": "mariadb", "name": f"{name}_site", "kind": "shop", "rows": template["rows"]}],
                "db_users": [{"engine": "mariadb", "name": name, "password": f"{name}-pw", "access": "all"}],
            }
        )
    for account in seeded:
        for site in account["sites"]:
            site["document_root"] = f"/home/{account['name']}/www/{site['domain']}"
        account["crontab"] = account.get("crontab", "") + lab.seed["cron_tick"].format(account=account["name"]) + "\n"
        account["mailbox_passwords"] = mailbox_passwords(lab, account)
    return seeded


def mailbox_passwords(lab: Lab, account: dict) -> dict[str, str]:
    """Each mailbox's IMAP password (the tests log in with them)."""
    template = lab.seed["mailbox_password"]
    return {box: template.format(account=account["name"], mailbox=box) for box in account["mailboxes"]}


def install_contract(lab: Lab, host: Host, seeded: list[dict] | None, architecture: str | None = None) -> None:
    """Runtime packages on every hosting server; profile, runtimes and accounts where `seeded` is given (the
    profile of `architecture`, by default the client's)."""
    plan: dict = {"packages": lab.seed["architectures"]}
    if seeded is not None:
        architecture = architecture or lab.seed["client_architecture"]
        plan["profile"] = {
            "hostname": host.fqdn,
            "architecture": architecture,
            "languages": lab.seed["architectures"][architecture],
            "services": {"mariadb": "10.11", "postgresql": "15", "nginx": "1.22"},
            "ips": {"ipv4": host.public_ipv4, "ipv6": host.public_ipv6},
        }
        plan["accounts"] = [{**account, "service_files": web.service_files(account)} for account in seeded]
        plan["unix_groups"] = lab.seed.get("unix_groups", {})
    # Passed as source, not as a path: the repository may sit where the host has a private mount (e.g. /tmp).
    run_in(host.name, ["python3", "-c", INHOST_SCRIPT.read_text()], input=json.dumps(plan))


# ---- MariaDB -------------------------------------------------------------------------------------------------


def _mariadb_tables(database: dict, big_db_mb: int) -> str:
    rows = database.get("rows", 0)
    kind = database["kind"]
    if kind == "shop":
        return f"""
CREATE TABLE products (id INT AUTO_INCREMENT PRIMARY KEY, sku VARCHAR(32) NOT NULL UNIQUE,
  name VARCHAR(200) NOT NULL, price DECIMAL(10,2) NOT NULL, created_at DATETIME NOT NULL, KEY idx_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO products (sku, name, price, created_at)
  SELECT CONCAT('SKU-', seq), CONCAT('Produkt ', seq, ' – Größe ', seq % 7), ROUND(seq * 1.37, 2),
         '2020-01-01' + INTERVAL seq HOUR FROM seq_1_to_{rows};
CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, product_id INT NOT NULL, qty INT NOT NULL, note TEXT,
  CONSTRAINT fk_product FOREIGN KEY (product_id) REFERENCES products (id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO orders (product_id, qty, note) SELECT 1 + seq % {rows}, 1 + seq % 5, CONCAT('order ', seq)
  FROM seq_1_to_{rows * 4};
CREATE TABLE audit_log (at DATETIME NOT NULL, message VARCHAR(255) NOT NULL) ENGINE=InnoDB;
INSERT INTO audit_log SELECT '2024-01-01' + INTERVAL seq MINUTE, CONCAT('event ', seq) FROM seq_1_to_{rows};
CREATE VIEW order_totals AS SELECT product_id, SUM(qty) AS total FROM orders GROUP BY product_id;
CREATE TRIGGER products_touch BEFORE UPDATE ON products FOR EACH ROW SET NEW.created_at = NOW();
"""
    if kind == "legacy_rows":
        # Accepted by the old permissive server, refused by the new one: a COMPACT row that can exceed the
        # page limit (innodb_strict_mode) and a zero-date default (NO_ZERO_DATE).
        wide = ",\n  ".join(f"section_{i} VARCHAR(1000) NOT NULL DEFAULT ''" for i in range(12))
        return f"""
CREATE TABLE posts (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(200) NOT NULL,
  published_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  {wide}
) ENGINE=InnoDB DEFAULT CHARSET=latin1 ROW_FORMAT=COMPACT;
INSERT INTO posts (title, section_0) SELECT CONCAT('Post ', seq), REPEAT('x', 100) FROM seq_1_to_{rows};
"""
    if kind == "big":
        total = max(1, big_db_mb * 1024 * 1024 // ROW_BYTES_BIG)
        chunk = 200_000
        inserts = "\n".join(
            "INSERT INTO measurements (sensor, taken_at, value, payload) "
            f"SELECT seq % 97, '2023-01-01' + INTERVAL seq SECOND, seq / 7, REPEAT(CHAR(65 + seq % 26), 180) "
            f"FROM seq_{start}_to_{min(start + chunk - 1, total)};"
            for start in range(1, total + 1, chunk)
        )
        return f"""
CREATE TABLE measurements (id BIGINT AUTO_INCREMENT PRIMARY KEY, sensor INT NOT NULL, taken_at DATETIME NOT NULL,
  value DOUBLE NOT NULL, payload VARCHAR(255) NOT NULL, KEY idx_sensor_time (sensor, taken_at)) ENGINE=InnoDB;
{inserts}
"""
    raise ValueError(f"unknown MariaDB seed kind {kind!r}")


def seed_mariadb(host: Host, account: dict, big_db_mb: int) -> None:
    statements = []
    for user in (u for u in account["db_users"] if u["engine"] == "mariadb"):
        privileges = "ALL PRIVILEGES" if user["access"] == "all" else "SELECT"
        statements.append(f"CREATE USER '{user['name']}'@'%' IDENTIFIED BY {mariadb_literal(user['password'])};")
        statements.append(f"GRANT {privileges} ON `{account['name']}\\_%`.* TO '{user['name']}'@'%';")
    for database in (d for d in account["databases"] if d["engine"] == "mariadb"):
        statements.append(f"CREATE DATABASE `{database['name']}`;\nUSE `{database['name']}`;")
        statements.append(_mariadb_tables(database, big_db_mb))
    if statements:
        mariadb_sql(host.name, "\n".join(statements))


# ---- PostgreSQL ----------------------------------------------------------------------------------------------


def _pg_tables(database: dict, big_db_mb: int) -> tuple[str, str]:
    """(CREATE DATABASE options, table script run as the owner)."""
    rows = database.get("rows", 0)
    kind = database["kind"]
    if kind == "app":
        return (
            "",
            f"""
CREATE TABLE plants (id serial PRIMARY KEY, name text NOT NULL, data jsonb, planted date);
INSERT INTO plants (name, data, planted)
  SELECT 'plant ' || g, jsonb_build_object('n', g, 'tags', ARRAY['green', 'café']), date '2020-01-01' + g
  FROM generate_series(1, {rows}) g;
CREATE TABLE visits (id bigserial PRIMARY KEY, plant_id int NOT NULL REFERENCES plants (id),
  at timestamptz NOT NULL, note text);
INSERT INTO visits (plant_id, at, note)
  SELECT 1 + g % {rows}, timestamptz '2024-01-01 00:00+00' + g * interval '1 minute', 'visit ' || g
  FROM generate_series(1, {rows * 3}) g;
CREATE INDEX visits_at ON visits (at);
CREATE TABLE tags_nopk (plant_id int NOT NULL, tag text NOT NULL);
INSERT INTO tags_nopk SELECT 1 + g % {rows}, 'tag' || (g % 13) FROM generate_series(1, {rows}) g;
CREATE VIEW recent_visits AS SELECT * FROM visits WHERE at > timestamptz '2024-01-02 00:00+00';
""",
        )
    if kind == "legacy_encoding":
        # SQL_ASCII accepts any bytes: Latin-1 text that a UTF8 database of the new architecture refuses.
        return (
            "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
            f"""
CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
INSERT INTO notes (body) SELECT E'caf\\xe9 cr\\xe8me br\\xfbl\\xe9e #' || g FROM generate_series(1, {rows}) g;
""",
        )
    if kind == "big":
        total = max(1, big_db_mb * 1024 * 1024 // ROW_BYTES_BIG)
        return (
            "",
            f"""
CREATE TABLE measurements (id bigserial PRIMARY KEY, sensor int NOT NULL, taken_at timestamptz NOT NULL,
  value double precision NOT NULL, payload text NOT NULL);
INSERT INTO measurements (sensor, taken_at, value, payload)
  SELECT g % 97, timestamptz '2023-01-01 00:00+00' + g * interval '1 second', g / 7.0, repeat(chr(65 + g % 26), 180)
  FROM generate_series(1, {total}) g;
CREATE INDEX measurements_sensor_time ON measurements (sensor, taken_at);
""",
        )
    raise ValueError(f"unknown PostgreSQL seed kind {kind!r}")


def seed_postgresql(host: Host, account: dict, big_db_mb: int) -> None:
    users = [u for u in account["db_users"] if u["engine"] == "postgresql"]
    databases = [d for d in account["databases"] if d["engine"] == "postgresql"]
    if not databases:
        return
    owner = next(u["name"] for u in users if u["access"] == "owner")
    psql(
        host.name,
        "\n".join(f"CREATE ROLE {u['name']} LOGIN PASSWORD {pg_literal(u['password'])};" for u in users)
        + "\n"
        + "\n".join(f"CREATE DATABASE {d['name']} OWNER {owner} {_pg_tables(d, big_db_mb)[0]};" for d in databases),
    )
    for database in databases:
        readers = [u["name"] for u in users if u["access"] == "read"]
        grants = "".join(
            f"GRANT CONNECT ON DATABASE {database['name']} TO {r};\nGRANT USAGE ON SCHEMA public TO {r};\n"
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r};\n"
            for r in readers
        )
        psql(host.name, f"SET ROLE {owner};\n{_pg_tables(database, big_db_mb)[1]}\n{grants}", database["name"])


# ---- DNS -----------------------------------------------------------------------------------------------------

PARENT_ZONE = "test"
SOA = "$TTL 300\n@ IN SOA {ns}. hostmaster.{origin}. ( 2024090101 3600 600 86400 300 )\n@ IN NS {ns}.\n"


def zones(lab: Lab, seeded: list[dict]) -> dict[str, dict[str, str]]:
    """Zone texts per DNS host: the provider's zones on `dns`, domains of other DNS providers on `thirdparty-dns`."""
    provider_zone = lab.seed["provider_zone"]
    client, transit = lab.hosts["client"], lab.hosts["transit"]
    ns_provider, ns_third = f"ns1.{provider_zone}", "ns.thirdparty.test"
    mx = [f"{name}.{provider_zone}" for name in lab.seed["mail_hosts"]]
    records = [f"ns1 IN A {lab.hosts['dns'].ipv4}"]
    for server in (client, transit):
        label = server.fqdn.split(".")[0]
        records += [f"{label} IN A {a}" for a in server.public_ipv4]
        records += [f"{label} IN AAAA {a}" for a in server.public_ipv6]
    records += [f"{name} IN A {address}" for name, address in lab.seed["mail_hosts"].items()]
    result = {
        "dns": {provider_zone: SOA.format(ns=ns_provider, origin=provider_zone) + "\n".join(records) + "\n"},
        "thirdparty-dns": {
            "thirdparty.test": SOA.format(ns=ns_third, origin="thirdparty.test")
            + f"ns IN A {lab.hosts['thirdparty-dns'].ipv4}\n"
        },
    }
    for account in seeded:
        for domain in account["domains"]:
            name = domain["name"]
            ns = ns_provider if domain["provider_dns"] else ns_third
            lines = [f"@ IN A {a}" for a in client.public_ipv4] + [f"@ IN AAAA {a}" for a in client.public_ipv6]
            lines += [f"www IN CNAME {name}."]
            if not domain["provider_dns"]:
                # The server itself is the primary MX of domains that only use the provider's mail.
                lines.append(f"@ IN MX 5 {client.fqdn}.")
            lines += [f"@ IN MX {10 * (i + 1)} {host}." for i, host in enumerate(mx)]
            target = "dns" if domain["provider_dns"] else "thirdparty-dns"
            result[target][name] = SOA.format(ns=ns, origin=name) + "\n".join(lines) + "\n"
    result["dns"][PARENT_ZONE] = parent_zone(lab, result)
    return result


def parent_zone(lab: Lab, zones: dict[str, dict[str, str]]) -> str:
    """The `test.` registry: a delegation (NS + glue) for every zone of the lab, so that who is authoritative for a
    domain is found as on the Internet, by following referrals (mx_cleanup's authority check)."""
    servers = {"dns": f"ns1.{lab.seed['provider_zone']}", "thirdparty-dns": "ns.thirdparty.test"}
    lines = [f"{name}. IN A {lab.hosts[host].ipv4}" for host, name in servers.items()]
    lines += [f"{name}. IN AAAA {lab.hosts[host].ipv6}" for host, name in servers.items()]
    for host, host_zones in zones.items():
        lines += [f"{zone}. IN NS {servers[host]}." for zone in sorted(host_zones)]
    return SOA.format(ns=servers["dns"], origin=PARENT_ZONE) + "\n".join(lines) + "\n"
