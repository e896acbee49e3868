"""Shared fixtures: the running lab, its facts (from the lab inventory), and real connections to its services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "lab" / "lab"
sys.path.insert(0, str(REPO / "lab"))
# collections/ansible_collections/hosting/migration links back to the repository root: with collections/ on
# sys.path, `ansible_collections.hosting.migration.plugins...` imports from this checkout.
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from hostinglab import config as lab_config  # noqa: E402

# Files whose tests need the seeded lab as `lab up` made it run first; those that move accounts between servers
# next to last; those that break or remove the lab last. Within a file, tests keep their order.
RUN_FIRST = ("test_lab.py",)
RUN_LATE = ("test_account_move.py", "test_awx_runner.py", "test_eight_steps.py", "test_inventory_names.py")
RUN_LAST = ("test_lab_lifecycle.py",)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        late = name in RUN_LATE or "reliability" in item.path.parts  # the reliability suite moves accounts
        return 0 if name in RUN_FIRST else 3 if name in RUN_LAST else 2 if late else 1

    items.sort(key=rank)


def run(argv, *, check=True, env=None, timeout=600, input=None):
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **(env or {})},
        timeout=timeout,
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def lab_facts():
    return lab_config.load()


@pytest.fixture(scope="session")
def lab(lab_facts):
    """The lab, brought up once per session (`lab up` is idempotent)."""
    run([LAB, "up"])
    return lab_facts


@pytest.fixture(scope="session")
def admin(lab_facts):
    return lab_facts.vars["hosting_db_admin_user"], lab_facts.vars["hosting_db_admin_password"]


@pytest.fixture
def mariadb(lab, admin):
    """A factory of pymysql connections to a lab host's MariaDB, as the provider's admin or an account user."""
    import pymysql

    opened = []

    def connect(host, user=None, password=None, database=None):
        conn = pymysql.connect(
            host=lab.hosts[host].ipv4,
            port=3306,
            user=user or admin[0],
            password=admin[1] if password is None else password,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=5,
        )
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def postgresql(lab, admin):
    import psycopg2

    opened = []

    def connect(host, user=None, password=None, database="postgres"):
        conn = psycopg2.connect(
            host=lab.hosts[host].ipv4,
            port=5432,
            user=user or admin[0],
            password=admin[1] if password is None else password,
            dbname=database,
            connect_timeout=5,
        )
        conn.autocommit = True
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture(scope="session")
def ssh(lab):
    """Run a shell command on a lab host over SSH, exactly as Ansible reaches it (key, known_hosts, guard)."""
    state = lab.vars["hosting_lab_state_dir"]

    def call(host, command, check=True):
        return run(
            [
                "ssh", "-i", f"{state}/controller/id_ed25519",
                "-o", f"UserKnownHostsFile={state}/controller/known_hosts", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", f"ProxyCommand={LAB} connect %h %p",
                f"root@{lab.hosts[host].ipv4}", command,
            ],
            check=check,
        )  # fmt: skip

    return call


def run_module(host, module, args, *, check_mode=False, diff=False, extra=(), env=None):
    """Run one module ad hoc on a lab host as a user would (`ansible HOST -m MODULE -a JSON`); returns
    (result dict, completed process). The result is exactly what the module returned, plus `_status`
    (ok, failed, unreachable or skipped)."""
    import json

    argv = ["ansible", host, "-m", module, "-a", json.dumps(args), *extra]
    if check_mode:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    callback_env = {
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "tests" / "callbacks"),
        "ANSIBLE_STDOUT_CALLBACK": "result_json",
    }
    proc = run(argv, check=False, env={**callback_env, **(env or {})})
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])[host]
    except (ValueError, IndexError, KeyError) as exc:
        raise AssertionError(f"{argv}: no result (rc {proc.returncode})\n{proc.stdout}\n{proc.stderr}") from exc
    return result, proc


@pytest.fixture(scope="session")
def module(lab):
    """module(host, name, args, check_mode=False, diff=False) -> (result dict, process) of one ad hoc module run."""
    return run_module


def pytest_terminal_summary(terminalreporter):
    """The reliability suite's table (issue 7): one line per injected fault, from the tests' `reliability`
    properties (tests/reliability/faults.py: ledger), and the totals; objects lost must be 0."""
    rows = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "reliability"
    ]
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability: faults injected and what was lost")
    width = max(len(row["fault"]) for row in rows)
    write(f"{'fault':<{width}}  runs  converged  compared  lost  unexpected")
    for row in rows:
        write(f"{row['fault']:<{width}}  {row['runs']:>4}  {'yes' if row['converged'] else 'NO':>9}  "
              f"{row['compared']:>8}  {row['lost']:>4}  {row['unexpected']:>10}")  # fmt: skip
    converged = sum(1 for row in rows if row["converged"])
    write(f"{len(rows)} faults injected, {sum(r['runs'] for r in rows)} runs, {converged} converged, "
          f"{sum(r['compared'] for r in rows)} objects compared, {sum(r['lost'] for r in rows)} lost, "
          f"{sum(r['unexpected'] for r in rows)} unexpected")  # fmt: skip
