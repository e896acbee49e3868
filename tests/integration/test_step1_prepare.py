"""Step 1 against the lab: the readiness report names carol's and bob's blockers with versions and replacements,
carol's database errors and findings, leaves no scratch database on the test DB server, changes nothing on the
client, and never shows the admin password."""

from __future__ import annotations

import datetime
import json

import pytest
from conftest import run
from lab_state import recap

from ansible_collections.hosting.migration.plugins.module_utils import mariadb as mariadb_utils
from ansible_collections.hosting.migration.plugins.module_utils import postgres as postgres_utils

pytestmark = pytest.mark.lab

CLIENT_DATABASES = {"mariadb": ["alice_shop", "carol_blog"], "postgresql": ["bob_app", "carol_legacy"]}


def client_snapshot(mariadb, postgresql):
    """Per-table row counts and content hashes of the seeded databases on the client."""
    snapshot = {}
    for name in CLIENT_DATABASES["mariadb"]:
        snapshot[name] = mariadb_utils.table_checksums(mariadb("client"), name)
    for name in CLIENT_DATABASES["postgresql"]:
        snapshot[name] = postgres_utils.table_checksums(postgresql("client", database=name), name)
    return snapshot


def scratch_databases(mariadb, postgresql):
    with mariadb("testdb").cursor() as cursor:
        cursor.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'hmcheck%'")
        found = [name for (name,) in cursor.fetchall()]
    with postgresql("testdb").cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'hmcheck%'")
        found += [name for (name,) in cursor.fetchall()]
    return found


def step1(tmp_path, *options):
    proc = run(["ansible-playbook", "playbooks/step1_prepare.yml", "-e", f"hosting_report_dir={tmp_path}", *options])
    (report,) = tmp_path.glob("step1_*.json")
    (markdown,) = tmp_path.glob("step1_*.md")
    return proc, json.loads(report.read_text()), markdown.read_text()


def assert_no_password(lab, proc, *texts):
    password = lab.vars["hosting_db_admin_password"]
    for text in (proc.stdout, proc.stderr, *texts):
        assert password not in text


def test_step1_reports_blockers_leaves_nothing_behind_and_reruns_alike(lab, mariadb, postgresql, tmp_path):
    before = client_snapshot(mariadb, postgresql)
    (tmp_path / "first").mkdir()
    proc, report, markdown = step1(tmp_path / "first")
    accounts = report["accounts"]

    carol = accounts["carol"]
    assert carol["status"] == "blocked" and carol["ready"] is False
    language = [b for b in carol["blockers"] if b["kind"] == "language"]
    assert [(b["language"], b["version"], b["replacement"]) for b in language] == [("php", "5.6", "8.1")]
    databases = {d["database"]: d for d in carol["databases"]}
    assert databases["carol_blog"]["ok"] is False
    assert any("Row size too large" in error for error in databases["carol_blog"]["errors"])
    legacy = databases["carol_legacy"]
    (finding,) = [f for f in legacy["findings"] if f["kind"] == "sql_ascii_encoding"]
    assert finding["invalid_utf8_values"] == 20 and "SQL_ASCII" in finding["message"]
    assert any(b["kind"] == "finding" and b["database"] == "carol_legacy" for b in carol["blockers"])

    bob = accounts["bob"]
    assert bob["status"] == "blocked"
    language = [b for b in bob["blockers"] if b["kind"] == "language"]
    assert [(b["language"], b["version"], b["replacement"]) for b in language] == [("python", "3.9", "3.11")]
    # bob's PostgreSQL roles carry md5 hashes, which the new architecture's SCRAM-only logins refuse.
    logins = sorted(b["message"].split(":")[0] for b in bob["blockers"] if b["kind"] == "login")
    assert logins == ["postgresql bob", "postgresql bob_ro"]

    alice = accounts["alice"]
    assert alice["status"] == "ready" and alice["ready"] is True and alice["blockers"] == []
    assert alice["databases"] and all(d["ok"] and d["seconds"] >= 0 for d in alice["databases"])
    # Her WordPress tables' zero-date defaults are a note, not a blocker (WordPress sets its own sql_mode).
    (note,) = [f for d in alice["databases"] for f in d["findings"]]
    assert note["kind"] == "zero_date_default_wordpress" and note["blocking"] is False and len(note["columns"]) == 8
    # Each account's crontab lines as schedule and program, arguments (maybe secrets) left out: the seeded jobs and
    # the minute tick.
    assert accounts["alice"]["crontab"] == ["MAILTO=...", "*/5 * * * * test ...", "* * * * * echo ..."]
    assert accounts["bob"]["crontab"] == ["0 3 * * * /home/bob/files/run.sh ...", "* * * * * echo ..."]
    assert accounts["carol"]["crontab"] == ["@daily test ...", "* * * * * echo ..."]
    assert accounts["dave"]["crontab"] == ["* * * * * echo ..."]
    assert "*/5 * * * * test ..." in markdown and "cron-ticks" not in markdown + json.dumps(report)
    # The services each account runs (they move with it): PHP-FPM pools for the PHP sites, bob's app server.
    services = {name: entry["services"] for name, entry in accounts.items()}
    assert services == {"alice": ["php-fpm"], "bob": ["supervisor"], "carol": ["php-fpm"], "dave": ["php-fpm"]}
    assert "Services (move with the account" in markdown and "supervisor" in markdown
    # Each account's certificates from the lab's ACME CA, read from its home: one per site, valid for a while yet.
    for name, entry in accounts.items():
        domains = [site["domain"] for site in lab.seed["accounts"][name]["sites"]]
        assert [c["domain"] for c in entry["certificates"]] == domains, entry["certificates"]
        for cert in entry["certificates"]:
            assert cert["issuer"].startswith("CN=Pebble Intermediate CA"), cert
            expires = datetime.datetime.strptime(cert["expires"], "%Y-%m-%dT%H:%M:%SZ")
            assert expires > datetime.datetime.utcnow() + datetime.timedelta(days=30), cert
    assert "`alice-shop.test` expires " in markdown and "issued by CN=Pebble" in markdown
    # The registry's mailbox password hashes stay out of the report.
    assert "$6$" not in markdown + json.dumps(report) and "mailbox_passwords" not in json.dumps(report)

    for name, entry in accounts.items():
        assert entry["downtime"]["estimate_s"] > 0 and entry["downtime"]["provider_s"] >= 0, name
        assert entry["disk"]["files_bytes"] > 0 and entry["disk"]["needed_bytes"] >= entry["disk"]["files_bytes"]
    assert report["transit_home_free_bytes"] > 0
    assert "alice" in report["ready"] and {"bob", "carol"} <= set(report["blocked"])

    assert "carol: blocked: php 5.6 (site carol-blog.test) is dropped by architecture 2024: switch it to php 8.1" in (
        " ".join(proc.stdout.split())
    )
    assert "## carol: blocked" in markdown and "Row size too large" in markdown
    assert scratch_databases(mariadb, postgresql) == []
    assert client_snapshot(mariadb, postgresql) == before
    assert_no_password(lab, proc, markdown, json.dumps(report))

    # Safe to re-run: the same verdicts, and again nothing left behind.
    (tmp_path / "second").mkdir()
    second = step1(tmp_path / "second")[1]
    assert {name: a["status"] for name, a in second["accounts"].items()} == {
        name: a["status"] for name, a in accounts.items()
    }
    assert scratch_databases(mariadb, postgresql) == []
    assert client_snapshot(mariadb, postgresql) == before


def test_step1_check_mode_changes_nothing_and_still_reports(lab, mariadb, postgresql, tmp_path):
    before = client_snapshot(mariadb, postgresql)
    proc, report, markdown = step1(tmp_path, "--check", "-e", "account=carol")
    assert report["check_mode"] is True and list(report["accounts"]) == ["carol"]
    carol = report["accounts"]["carol"]
    assert carol["status"] == "blocked" and carol["databases_tested"] is False
    assert {d["database"] for d in carol["databases"]} == {"carol_blog", "carol_legacy"}
    assert all("ok" not in d and d["size_bytes"] > 0 for d in carol["databases"])
    assert recap(proc.stdout)["client"] == {**recap(proc.stdout)["client"], "changed": 0, "failed": 0}
    assert scratch_databases(mariadb, postgresql) == []
    assert client_snapshot(mariadb, postgresql) == before
    assert_no_password(lab, proc, markdown, json.dumps(report))


@pytest.mark.parametrize("name", ["Carol", "carol;id", "../carol"])
def test_step1_refuses_hostile_account_names(lab, tmp_path, name):
    proc = run(
        ["ansible-playbook", "playbooks/step1_prepare.yml", "-e", f"hosting_report_dir={tmp_path}", "-e",
         json.dumps({"account": name})],
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "invalid account name" in proc.stdout
    assert not list(tmp_path.iterdir())
