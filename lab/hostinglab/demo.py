"""`make demo`'s sequence: the eight steps for every lab account, with the fixes a user makes in between.

Each step is a name and a callable; the end-to-end test runs the same list and checks the lab between steps.
Playbooks run from the repository root with its ansible.cfg and the first `ansible-playbook` on PATH (the
Makefile puts .venv/bin first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from .config import REPO, Lab


def playbook(name: str, *extra: str) -> Callable[[Lab], None]:
    argv = ["ansible-playbook", f"playbooks/{name}", *extra]

    def run(lab: Lab) -> None:
        print(f"demo: $ {' '.join(argv)}", flush=True)
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
        if subprocess.run(argv, cwd=REPO, env=env, check=False).returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed")

    run.argv = argv  # type: ignore[attr-defined]  # the end-to-end test also runs it with --check
    return run


def fix_carol_database(lab: Lab) -> None:
    """What carol does after step 1's report: the new MariaDB refuses her COMPACT rows and zero dates, so she
    converts the table and its dates, connected as herself to the server that holds her account (transit)."""
    import pymysql

    user = next(u for u in lab.seed["accounts"]["carol"]["db_users"] if u["engine"] == "mariadb")
    print("demo: carol fixes carol_blog.posts (ROW_FORMAT=DYNAMIC, no zero dates) on the transit server", flush=True)
    conn = pymysql.connect(host=lab.hosts["transit"].ipv4, user=user["name"], password=user["password"],
                           database="carol_blog", autocommit=True, connect_timeout=10)  # fmt: skip
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = ''")
            cursor.execute("UPDATE posts SET published_at = '1970-01-01 00:00:01' WHERE published_at < '1970-01-02'")
            cursor.execute("ALTER TABLE posts ROW_FORMAT=DYNAMIC, ALTER published_at SET DEFAULT '1970-01-01 00:00:01'")
    finally:
        conn.close()


def rehash_postgresql_passwords(lab: Lab) -> None:
    """What each PostgreSQL user does after step 1's report: the old servers stored md5 hashes, which the new
    architecture's SCRAM-only logins refuse, so they set their (same) passwords again as SCRAM, on the server that
    holds their account (transit)."""
    import psycopg2

    for account in lab.seed["accounts"].values():
        for user in account["db_users"]:
            if user["engine"] != "postgresql":
                continue
            print(f"demo: {user['name']} sets its PostgreSQL password again as SCRAM", flush=True)
            database = next(d["name"] for d in account["databases"] if d["engine"] == "postgresql")
            conn = psycopg2.connect(host=lab.hosts["transit"].ipv4, user=user["name"], password=user["password"],
                                    dbname=database, connect_timeout=10)  # fmt: skip
            conn.autocommit = True
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SET password_encryption = 'scram-sha-256'")
                    cursor.execute("ALTER ROLE CURRENT_USER PASSWORD %s", (user["password"],))
            finally:
                conn.close()


STEPS: list[tuple[str, Callable[[Lab], None]]] = [
    ("step 1: readiness report", playbook("step1_prepare.yml")),
    ("step 2: prune unused language versions, request the transit server", playbook("step2_transit_request.yml")),
    ("step 3: install the transit server, pre-copy", playbook("step3_transit_install.yml")),
    ("step 4: migrate every account to the transit server", playbook("step4_migrate.yml", "-e", "accounts=all")),
    ("step 5: verify the moved accounts", playbook("step5_verify.yml")),
    ("fix: carol's site to PHP 8.1", playbook("site_version.yml", "-e", "account=carol", "-e",
                                              "domain=carol-blog.test", "-e", "version=8.1")),
    ("fix: bob's site to Python 3.11", playbook("site_version.yml", "-e", "account=bob", "-e",
                                                "domain=bobs-garden.test", "-e", "version=3.11")),
    ("fix: carol's database", fix_carol_database),
    ("fix: PostgreSQL passwords as SCRAM", rehash_postgresql_passwords),
    ("step 6: reroute, reinstall the client server, pre-copy back", playbook("step6_reinstall.yml")),
    ("step 7: relocate every account to the client server", playbook("step7_relocate.yml", "-e", "accounts=all")),
    ("step 5 again: verify the relocated accounts", playbook("step5_verify.yml")),
    ("step 8: addresses and DNS back, bill, final report", playbook("step8_finish.yml")),
]  # fmt: skip


def run_all(lab: Lab) -> None:
    started = time.monotonic()
    for name, step in STEPS:
        print(f"\ndemo: ==== {name}", flush=True)
        step(lab)
    print(f"\ndemo: the eight steps took {time.monotonic() - started:.0f}s; final report: "
          f"{REPO / 'reports' / 'final_report.md'} (and .html)", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit("run it as `lab/lab demo`")
