"""lang_prune against the lab's client over SSH: the seeded 2020 server (php 5.6/7.4/8.1, python 3.7/3.9) measured
against the 2024 architecture. Identity is checked with the tests' own listing (type, mode, owner, link target and
sha256 of every entry of /opt/hosting/langs, plus the server profile's bytes), never with the module's manifest.

Every test leaves the client as it found it: the `untouched_client` fixture restores and compares at the end."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.lab

MODULE = "hosting.migration.lang_prune"
ARCH = {"target_architecture": "2024"}
LANGS = "/opt/hosting/langs"
PROFILE = "/etc/hosting/server.yml"
QUARANTINE = "/opt/hosting/.lang-quarantine"
RECORD = "/var/lib/hosting-migration/server/lang_prune.json"

LISTING = f"""
set -e
cd {LANGS}
find . -printf '%p|%y|%m|%U|%G|%l\\n' | LC_ALL=C sort
find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
echo "profile $(stat -c '%a|%U|%G' {PROFILE}) $(sha256sum < {PROFILE})"
"""


def listing(ssh) -> str:
    return ssh("client", LISTING).stdout


def runtimes(snapshot: str) -> set[str]:
    """The <language>/<version> directories present in a listing."""
    return {line.split("|")[0][2:] for line in snapshot.splitlines() if line.count("/") == 2 and "|d|" in line}


def exists(ssh, path) -> bool:
    return ssh("client", f"test -e {path}", check=False).returncode == 0


@pytest.fixture
def untouched_client(ssh, module):
    """The client's runtimes and profile before the test; afterwards everything pruned is restored and the
    listing must be identical again, with no quarantine and no record left."""
    before = listing(ssh)
    assert not exists(ssh, QUARANTINE), "a quarantine is left over from an earlier run"
    yield before
    result, _proc = module("client", MODULE, {"state": "restored"})
    assert result["_status"] == "ok", result
    assert listing(ssh) == before
    assert not exists(ssh, QUARANTINE)
    assert not exists(ssh, RECORD)


def by_version(result) -> dict[str, dict]:
    return {f"{item['language']}/{item['version']}": item for item in result["unsupported"]}


def test_report_lists_unsupported_versions_blockers_and_replacements(module, untouched_client):
    result, _proc = module("client", MODULE, ARCH)
    assert result["_status"] == "ok", result
    assert result["changed"] is False
    versions = by_version(result)
    assert sorted(versions) == ["php/5.6", "php/7.4", "python/3.7", "python/3.9"]
    assert versions["php/5.6"]["blockers"] == [{"account": "carol", "domain": "carol-blog.test"}]
    assert versions["python/3.9"]["blockers"] == [{"account": "bob", "domain": "bobs-garden.test"}]
    assert versions["php/7.4"]["blockers"] == [] and versions["python/3.7"]["blockers"] == []
    assert {rid: item["replacement"] for rid, item in versions.items()} == {
        "php/5.6": "8.1",
        "php/7.4": "8.1",
        "python/3.7": "3.11",
        "python/3.9": "3.11",
    }
    assert {rid: item["action"] for rid, item in versions.items()} == {
        "php/5.6": "kept: in use",
        "php/7.4": "prunable",
        "python/3.7": "prunable",
        "python/3.9": "kept: in use",
    }
    assert {(b["account"], b["language"], b["version"]) for b in result["blockers"]} == {
        ("carol", "php", "5.6"),
        ("bob", "python", "3.9"),
    }
    assert result["ready"] is False
    assert result["installed"] == {"php": ["5.6", "7.4", "8.1"], "python": ["3.7", "3.9"]}


def test_check_mode_changes_nothing(ssh, module, untouched_client):
    for args in ({**ARCH, "state": "pruned"}, {**ARCH, "state": "pruned", "force": True}):
        result, _proc = module("client", MODULE, args, check_mode=True, diff=True)
        assert result["_status"] == "ok", result
        assert result["changed"] is True
        expected = (
            ["php/7.4", "python/3.7"] if not args.get("force") else ["php/5.6", "php/7.4", "python/3.7", "python/3.9"]
        )
        assert result["pruned"] == expected
        assert result["diff"]["before"]["installed"]["php"] == ["5.6", "7.4", "8.1"]
        assert "7.4" not in result["diff"]["after"]["installed"]["php"]
        assert listing(ssh) == untouched_client
        assert not exists(ssh, QUARANTINE) and not exists(ssh, RECORD)


def test_prune_removes_unused_versions_only_and_restore_is_byte_identical(ssh, module, untouched_client):
    result, _proc = module("client", MODULE, {**ARCH, "state": "pruned"}, diff=True)
    assert result["_status"] == "ok", result
    assert result["changed"] is True
    assert result["pruned"] == ["php/7.4", "python/3.7"]
    assert by_version(result)["php/5.6"]["action"] == "kept: in use"
    pruned = listing(ssh)
    assert runtimes(pruned) == {"php/5.6", "php/8.1", "python/3.9"}
    # What stays is untouched: its lines of the listing are the same as before.
    kept = [line for line in untouched_client.splitlines() if "7.4" not in line and "3.7" not in line]
    assert [line for line in pruned.splitlines() if not line.startswith("profile ")] == [
        line for line in kept if not line.startswith("profile ")
    ]
    profile = yaml.safe_load(ssh("client", f"cat {PROFILE}").stdout)
    assert profile["languages"] == {"php": ["5.6", "8.1"], "python": ["3.9"]}
    assert exists(ssh, f"{QUARANTINE}/php/7.4.manifest.json") and exists(ssh, f"{QUARANTINE}/php/7.4/bin/php")
    assert result["diff"]["after"]["installed"] == {"php": ["5.6", "8.1"], "python": ["3.9"]}

    again, _proc = module("client", MODULE, {**ARCH, "state": "pruned"})
    assert again["_status"] == "ok", again
    assert again["changed"] is False
    assert again["pruned"] == []
    assert by_version(again)["php/7.4"]["action"] == "already quarantined"
    assert listing(ssh) == pruned

    planned, _proc = module("client", MODULE, {"state": "restored"}, check_mode=True)
    assert planned["_status"] == "ok", planned
    assert planned["changed"] is True and planned["restored"] == ["php/7.4", "python/3.7"]
    assert listing(ssh) == pruned and exists(ssh, RECORD)

    restored, _proc = module("client", MODULE, {"state": "restored"})
    assert restored["_status"] == "ok", restored
    assert restored["changed"] is True
    assert restored["restored"] == ["php/7.4", "python/3.7"]
    assert listing(ssh) == untouched_client
    assert not exists(ssh, QUARANTINE) and not exists(ssh, RECORD)

    second, _proc = module("client", MODULE, {"state": "restored"})
    assert second["_status"] == "ok", second
    assert second["changed"] is False
    assert second["restored"] == []


def test_force_prunes_versions_in_use_and_restore_brings_them_back(ssh, module, untouched_client):
    result, _proc = module("client", MODULE, {**ARCH, "state": "pruned", "force": True})
    assert result["_status"] == "ok", result
    assert result["pruned"] == ["php/5.6", "php/7.4", "python/3.7", "python/3.9"]
    assert runtimes(listing(ssh)) == {"php/8.1"}
    # The blockers are still reported: carol's and bob's sites now point at a missing runtime.
    assert {b["account"] for b in result["blockers"]} == {"bob", "carol"}

    restored, _proc = module("client", MODULE, {"state": "restored"}, diff=True)
    assert restored["_status"] == "ok", restored
    assert sorted(restored["restored"]) == ["php/5.6", "php/7.4", "python/3.7", "python/3.9"]
    assert restored["diff"]["after"]["installed"] == {"php": ["5.6", "7.4", "8.1"], "python": ["3.7", "3.9"]}
    assert listing(ssh) == untouched_client
    out = ssh("client", f"{LANGS}/php/5.6/bin/php").stdout
    assert out.startswith("php 5.6")


def test_restore_refuses_a_quarantined_runtime_that_changed(ssh, module, untouched_client):
    result, _proc = module("client", MODULE, {**ARCH, "state": "pruned"})
    assert result["_status"] == "ok", result
    ssh("client", f"chmod 600 {QUARANTINE}/php/7.4/lib/VERSION")
    pruned = listing(ssh)

    refused, _proc = module("client", MODULE, {"state": "restored"})
    assert refused["_status"] == "failed"
    assert "php/7.4" in refused["msg"] and "lib/VERSION: mode differ" in refused["msg"]
    assert listing(ssh) == pruned
    assert exists(ssh, RECORD)

    ssh("client", f"chmod 644 {QUARANTINE}/php/7.4/lib/VERSION")  # the fixture's restore must now succeed


HOSTILE = {
    "arch-dotdot": ({"target_architecture": "../x"}, "invalid architecture"),
    "arch-newline": ({"target_architecture": "2024\n"}, "invalid architecture"),
    "relative-langs": ({**ARCH, "langs_dir": "relative/langs"}, "langs_dir must be an absolute, normalised path"),
    "dotdot-langs": ({**ARCH, "langs_dir": "/opt/hosting/../hosting/langs"}, "langs_dir must be an absolute"),
    "quarantine-inside-langs": ({**ARCH, "quarantine_dir": "/opt/hosting/langs/.q"}, "must not contain one another"),
    "nul-quarantine": ({**ARCH, "quarantine_dir": "/opt/hosting/.q\u0000x"}, "quarantine_dir must be an absolute"),
    "other-filesystem": ({**ARCH, "quarantine_dir": "/dev/shm/lang-quarantine"}, "is not on the file system of"),
    "trailing-slash": ({**ARCH, "registry_dir": "/etc/hosting/accounts/"}, "registry_dir must be an absolute"),
    "dot-profile": ({**ARCH, "profile_path": "/etc/hosting/./server.yml"}, "profile_path must be an absolute"),
    "hostile-version": (
        {**ARCH, "support_matrix": {"2024": {"languages": {"php": ["8.1; rm -rf /"]}}}},
        "invalid version",
    ),
    "hostile-matrix-arch": ({**ARCH, "support_matrix": {"../2024": {"languages": {"php": ["8.1"]}}}}, "invalid arch"),
}


@pytest.mark.parametrize(("args", "refusal"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_values_fail_before_any_change(ssh, module, untouched_client, args, refusal):
    result, _proc = module("client", MODULE, {**args, "state": "pruned"})
    assert result["_status"] == "failed", result
    assert refusal in result["msg"]
    assert result.get("pruned", []) == []
    assert listing(ssh) == untouched_client
    assert not exists(ssh, QUARANTINE) and not exists(ssh, RECORD)
