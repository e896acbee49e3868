"""Hostile input to every playbook that takes an account or a domain (issue 7): quotes, backticks, command
substitution, dots, `..`, `/`, a leading `-`, NUL, 65+ characters. Each run is refused before it changes anything,
with a message that says what is wrong; with MariaDB's general log and PostgreSQL's log_statement=all on for the
whole test, no statement carrying the input reaches either server, and no file named after it appears anywhere on
them.

The modules' own integration tests feed the same kind of input to each module directly."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from faults import fresh_lab, ledger
from lab_state import in_host, playbook

pytestmark = pytest.mark.lab

MARK = "hmx7"  # in every hostile value: what must never reach a log, a file name or a statement
ACCOUNTS = [
    f"a';DROP DATABASE {MARK};--",
    f"`touch /tmp/{MARK}`",
    f"$(touch /tmp/{MARK})",
    f"../{MARK}",
    f"-{MARK}",
    f"{MARK}/../../etc",
    f"{MARK}\x00root",
    f"{MARK}.",
    MARK * 17,
    f"{MARK} x",
]
DOMAINS = [f"{MARK}.test;id", f"-{MARK}.test", f"{MARK}..test", f"../{MARK}.test", f"{MARK}.test`id`"]
PROBE = "hm-log-probe"


def runs() -> list[tuple[str, dict]]:
    cases = []
    for value in ACCOUNTS:
        cases += [("step1_prepare.yml", {"accounts": value}), ("step4_migrate.yml", {"account": value}),
                  ("step5_verify.yml", {"accounts": value}), ("step7_relocate.yml", {"account": value}),
                  ("rollback.yml", {"account": value}),
                  ("site_version.yml", {"account": value, "domain": "alice-shop.test", "version": "8.1"})]  # fmt: skip
    for value in DOMAINS:
        cases.append(("site_version.yml", {"account": "alice", "domain": value, "version": "8.1"}))
    return cases


def case_id(case):
    return f"{case[0]}:{json.dumps(case[1])[:40]}"


@pytest.fixture
def logged(lab, mariadb, postgresql):
    """Both servers log every statement while the module's tests run."""
    lab = fresh_lab(lab)
    for host in ("client", "transit"):
        with mariadb(host).cursor() as cursor:
            cursor.execute(f"SET GLOBAL general_log_file = '/var/lib/mysql/{MARK}-check.log'")
            cursor.execute("SET GLOBAL general_log = 1")
        with postgresql(host).cursor() as cursor:
            cursor.execute("ALTER SYSTEM SET log_statement = 'all'")
            cursor.execute("SELECT pg_reload_conf()")
        # The logs work: this probe must show up in both (the test checks), or a clean log would prove nothing.
        with mariadb(host).cursor() as cursor:
            cursor.execute(f"SELECT '{PROBE}'")
        with postgresql(host).cursor() as cursor:
            cursor.execute(f"SELECT '{PROBE}'")
    yield lab
    for host in ("client", "transit"):
        with mariadb(host).cursor() as cursor:
            cursor.execute("SET GLOBAL general_log = 0")
        with postgresql(host).cursor() as cursor:
            cursor.execute("ALTER SYSTEM RESET log_statement")
            cursor.execute("SELECT pg_reload_conf()")
        in_host(host, f"rm -f /var/lib/mysql/{MARK}-check.log")


# In make test-long (make test feeds hostile input to each module in the modules' own integration tests).
@pytest.mark.long
def test_hostile_input_is_refused_before_anything_and_reaches_no_server(logged, record_property):
    cases = runs()
    marker_files = f"find / -xdev -name '*{MARK}*' -not -name '{MARK}-check.log' 2>/dev/null | head"
    before = {host: in_host(host, marker_files).stdout for host in ("client", "transit")}

    def attempt(case):
        name, extra = case
        return case, playbook(name, "-e", json.dumps(extra), check=False)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(attempt, cases))
    accepted = [case_id(case) for case, result in results if result.returncode == 0]
    unclear = [case_id(case) for case, result in results
               if result.returncode != 0 and "invalid" not in result.stdout.lower()
               and "give -e account" not in result.stdout]  # fmt: skip
    reached = []
    for host in ("client", "transit"):
        general = in_host(host, f"cat /var/lib/mysql/{MARK}-check.log 2>/dev/null || true").stdout
        statements = in_host(host, "cat /var/log/postgresql/postgresql-15-main.log 2>/dev/null || true").stdout
        assert PROBE in general and PROBE in statements, f"{host}: a statement log is not on"
        reached += [f"{host} {kind}" for kind, text in (("MariaDB", general), ("PostgreSQL", statements))
                    if MARK in text]  # fmt: skip
        assert in_host(host, marker_files).stdout == before[host], f"a file named after the input on {host}"
    ledger(record_property, f"hostile input to {len(cases)} playbook runs", runs=len(cases),
           converged=not accepted, compared=len(cases), lost=len(accepted) + len(reached),
           unexpected=len(unclear))  # fmt: skip
    assert accepted == [], f"hostile input accepted: {accepted}"
    assert unclear == [], f"refused without saying why: {unclear}"
    assert reached == [], f"the input reached a database: {reached}"
