"""The filters through Ansible's own templating: FQCNs resolve from a checkout (ansible.cfg's collections_path),
Ansible's tagged values reach them, and their AnsibleFilterError fails the task with its message."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
ACCOUNTS = {
    "bob": {"location": "transit", "db_bytes": 2_000_000_000, "domains": [{"name": "bobs-garden.test"}]},
    "alice": {"location": "client", "db_bytes": 300_000_000, "domains": ["alice.test"]},
}
MOVES = {"alice": {"step4": {"downtime_s": 9.5, "verified": True}}, "bob": {"step4": {"downtime_s": 31.0}}}


def debug(expression: str, **extra_vars: object) -> dict:
    """The result of `ansible localhost -m debug -a 'msg={{ expression }}'`, as the debug module returned it."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "tests" / "callbacks"),
        "ANSIBLE_STDOUT_CALLBACK": "result_json",
    }
    argv = ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.debug",
            "-a", f"msg={{{{ {expression} }}}}", "-e", json.dumps(extra_vars)]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no result (rc {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])["localhost"]


def test_every_filter_resolves_by_fqcn():
    result = debug(
        "{'estimate': dbs | hosting.migration.downtime_estimate(fixed_s=0),"
        " 'bill': '2024-02-10' | hosting.migration.transit_bill('2024-03-05', '29.90'),"
        " 'languages': sites | hosting.migration.unsupported_languages(2024),"
        " 'selected': accounts | hosting.migration.select_accounts(\"sort_by(@, &name)[?location=='client'].name\"),"
        " 'named': accounts | hosting.migration.select_accounts('bob,alice'),"
        " 'rows': accounts | hosting.migration.report_rows(moves),"
        " 'chart': accounts | hosting.migration.report_rows(moves) | hosting.migration.downtime_chart_svg}",
        dbs=[{"engine": "postgresql", "size_bytes": 10**9}],
        sites=[{"account": "carol", "domain": "carol.test", "language": "php", "version": "7.4"}],
        accounts=ACCOUNTS,
        moves=MOVES,
    )
    assert result["_status"] == "ok", result
    msg = result["msg"]
    assert msg["estimate"]["estimate_s"] == 10.4
    assert msg["bill"]["amount"] == "11.01"
    assert msg["languages"] == [
        {"language": "php", "version": "7.4", "replacement": "8.1", "accounts": ["carol"], "domains": ["carol.test"]}
    ]
    assert msg["selected"] == ["alice"]
    assert msg["named"] == ["bob", "alice"]
    assert [(r["account"], r["domains"], r["downtime_step4_s"]) for r in msg["rows"]] == [
        ("alice", ["alice.test"], 9.5),
        ("bob", ["bobs-garden.test"], 31.0),
    ]
    assert msg["chart"].startswith("<svg ") and 'data-account="bob"' in msg["chart"]


def test_bad_input_fails_the_task_with_the_filter_message():
    result = debug("dbs | hosting.migration.downtime_estimate", dbs=[{"engine": "oracle", "size_bytes": 1}])
    assert result["_status"] == "failed"
    assert "unknown engine 'oracle'" in result["msg"]
