"""module_utils/langs.py and the lang_prune module's logic on tmp_path trees: matrix, replacements, plan,
manifests, quarantine and restore (also after a prune killed half-way), and check mode writing nothing."""

from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

import pytest
import yaml

from ansible_collections.hosting.migration.plugins.module_utils import langs
from ansible_collections.hosting.migration.plugins.module_utils.journal import Journal
from ansible_collections.hosting.migration.plugins.modules import lang_prune

MATRIX_2024 = langs.load_matrix("2024")


def write(path, text, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def runtime(langs_dir, language, version):
    root = langs_dir / language / version
    write(root / "bin" / language, f"#!/bin/sh\necho {language} {version}\n", 0o755)
    write(root / "lib" / "VERSION", f"{version}\n")
    (root / "lib" / "current").symlink_to("VERSION")
    return root


def snapshot(root) -> list[tuple]:
    """The test's own listing of the server's files (the journal aside): path, mode, owner, link target and
    content hash of every entry."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root) and "journal" in dirnames:
            dirnames.remove("journal")
        for name in sorted(dirnames + filenames) + ["."]:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                digest = hashlib.sha256(open(path, "rb").read()).hexdigest()  # noqa: SIM115
            link = os.readlink(path) if os.path.islink(path) else None
            entries.append((os.path.relpath(path, root), info.st_mode, info.st_uid, info.st_gid, link, digest))
    return sorted(entries)


@pytest.fixture
def server(tmp_path):
    """A 2020 server: php 5.6 (carol), 7.4 (unused), 8.1 (alice); python 3.7 (unused), 3.9 (bob)."""
    langs_dir = tmp_path / "opt" / "langs"
    for language, version in [("php", "5.6"), ("php", "7.4"), ("php", "8.1"), ("python", "3.7"), ("python", "3.9")]:
        runtime(langs_dir, language, version)
    registry = tmp_path / "etc" / "accounts"
    sites = {"alice": ("php", "8.1"), "bob": ("python", "3.9"), "carol": ("php", "5.6")}
    for account, (language, version) in sites.items():
        site = {"domain": f"{account}.test", "language": language, "version": version, "document_root": "/x"}
        write(registry / f"{account}.yml", yaml.safe_dump({"name": account, "sites": [site]}))
    profile = tmp_path / "etc" / "server.yml"
    write(
        profile,
        "architecture: '2020'\n# kept verbatim\nlanguages:\n  php: ['5.6', '7.4', '8.1']\n  python: ['3.7', '3.9']\n",
        0o640,
    )
    return SimpleNamespace(
        root=tmp_path,
        params={
            "state": "report",
            "target_architecture": "2024",
            "force": False,
            "support_matrix": None,
            "langs_dir": str(langs_dir),
            "profile_path": str(profile),
            "registry_dir": str(registry),
            "quarantine_dir": str(tmp_path / "opt" / ".quarantine"),
            "journal_dir": str(tmp_path / "journal"),
        },
    )


def run(server, check_mode=False, **params):
    module = SimpleNamespace(params={**server.params, **params}, check_mode=check_mode, _diff=True)
    return lang_prune.LangPrune(module).run()


# ---- matrix and replacements ------------------------------------------------------------------------------------


def test_shipped_2024_matrix_matches_the_lab_seed():
    assert MATRIX_2024["languages"] == {"php": ["8.1", "8.2", "8.3"], "python": ["3.11", "3.12"]}
    assert MATRIX_2024["replacements"] == {
        "php": {"5.6": "8.1", "7.4": "8.1"},
        "python": {"3.7": "3.11", "3.9": "3.11"},
    }


@pytest.mark.parametrize(
    ("language", "version", "expected"),
    [
        ("php", "5.6", "8.1"),  # explicit map
        ("python", "3.9", "3.11"),  # explicit map
        ("php", "8.0", "8.1"),  # computed: closest supported that is not older
        ("php", "8.2.1", "8.3"),
        ("python", "3.13", "3.12"),  # computed: nothing newer, the newest
        ("ruby", "2.7", None),  # language not offered at all
    ],
)
def test_replacement_for(language, version, expected):
    assert langs.replacement_for(language, version, MATRIX_2024) == expected


def test_support_matrix_override_replaces_an_architecture():
    matrix = langs.load_matrix("2024", {"2024": {"languages": {"php": ["8.3", "8.2"]}}})
    assert matrix == {"languages": {"php": ["8.2", "8.3"]}, "replacements": {}}
    assert langs.load_matrix("2020", {"2024": {"languages": {}}})["languages"]["php"] == ["5.6", "7.4", "8.1"]


@pytest.mark.parametrize(
    "override",
    [
        {"../x": {"languages": {}}},
        {"2024": {"languages": {"php": ["8.1;x"]}}},
        {"2024": {"languages": {"PHP": ["8.1"]}}},
        {"2024": {"languages": {"php": "8.1"}}},
        {"2024": {"languages": {"php": ["8.1"]}, "replacements": {"php": {"7.4": "9.9"}}}},
        {"2024": ["php"]},
    ],
)
def test_support_matrix_override_is_validated(override):
    with pytest.raises(langs.LangError):
        langs.load_matrix("2024", override)


@pytest.mark.parametrize(
    "value",
    ["relative", "/a/../b", "/a/./b", "/a/", "//a", "/", "/a\0b", "/a\nb", "", None, 3],
)
def test_hostile_paths_are_refused(value):
    with pytest.raises(langs.LangError):
        langs.validate_abs_path(value, "langs_dir")


@pytest.mark.parametrize("value", ["../x", "2024\n", "", "a/b", "a.b", "x" * 33, None])
def test_hostile_architectures_are_refused(value):
    with pytest.raises(langs.LangError):
        langs.validate_architecture(value)


# ---- scan and plan ----------------------------------------------------------------------------------------------


def test_scan_ignores_what_is_not_a_runtime_directory(tmp_path):
    runtime(tmp_path, "php", "7.4")
    (tmp_path / "php" / "current").symlink_to("7.4")
    (tmp_path / "php" / "8.1").symlink_to("7.4")
    (tmp_path / "php" / "notes.txt").write_text("x")
    (tmp_path / "Bad Name").mkdir()
    installed, ignored = langs.scan_installed(str(tmp_path))
    assert installed == {"php": ["7.4"]}
    assert ignored == ["Bad Name", "php/8.1", "php/current", "php/notes.txt"]


def test_registry_entries_are_validated():
    good = {"name": "bob", "sites": [{"domain": "b.test", "language": "python", "version": "3.9"}]}
    assert langs.validate_registry_entry("bob", good)[0]["version"] == "3.9"
    for account, entry in [
        ("Bob", good),
        ("alice", good),
        ("bob", {"sites": [{"domain": "b.test", "language": "py thon", "version": "3.9"}]}),
        ("bob", {"sites": [{"domain": "b.test", "language": "python", "version": "../3"}]}),
        ("bob", {"sites": [{"domain": "b test", "language": "python", "version": "3.9"}]}),
        ("bob", ["x"]),
    ]:
        with pytest.raises((langs.LangError, ValueError)):
            langs.validate_registry_entry(account, entry)


def test_plan_blocks_versions_in_use_unless_forced():
    installed = {"php": ["5.6", "7.4", "8.1"], "python": ["3.7", "3.9"]}
    sites = [
        {"account": "carol", "domain": "c.test", "language": "php", "version": "5.6"},
        {"account": "erin", "domain": "e.test", "language": "python", "version": "3.6"},
    ]
    plan = {f"{i['language']}/{i['version']}": i for i in langs.build_plan(installed, MATRIX_2024, sites, [], False)}
    assert {rid: i["action"] for rid, i in plan.items()} == {
        "php/5.6": "kept: in use",
        "php/7.4": "prune",
        "python/3.6": "not installed",
        "python/3.7": "prune",
        "python/3.9": "prune",
    }
    assert plan["php/5.6"]["blockers"] == [{"account": "carol", "domain": "c.test"}]
    assert plan["python/3.6"]["replacement"] == "3.11"
    forced = langs.build_plan(installed, MATRIX_2024, sites, [], True)
    assert [i["action"] for i in forced if i["installed"]] == ["prune"] * 4
    assert [b["account"] for b in langs.blocker_list(forced)] == ["carol", "erin"]


# ---- manifests and the quarantine --------------------------------------------------------------------------------


def test_manifest_records_every_entry_and_sees_any_change(tmp_path):
    root = runtime(tmp_path, "php", "7.4")
    manifest = langs.build_manifest(str(root))
    entries = {e["path"]: e for e in manifest["entries"]}
    assert sorted(entries) == [".", "bin", "bin/php", "lib", "lib/VERSION", "lib/current"]
    assert entries["bin/php"]["mode"] == "0755" and entries["lib/current"]["target"] == "VERSION"
    assert entries["lib/VERSION"]["sha256"] == hashlib.sha256(b"7.4\n").hexdigest()
    assert manifest["files"] == 2
    (root / "lib" / "VERSION").chmod(0o600)
    (root / "lib" / "current").unlink()
    (root / "lib" / "current").symlink_to("/etc/passwd")
    (root / "extra").write_text("")
    differences = langs.manifest_differences(manifest, langs.build_manifest(str(root)))
    assert differences == ["extra: not in the manifest", "lib/VERSION: mode differ", "lib/current: target differ"]


def test_quarantine_must_be_on_the_same_filesystem(tmp_path):
    quarantine = langs.Quarantine(str(tmp_path), "/proc/lang-quarantine", lambda record: None)
    with pytest.raises(langs.LangError, match="not on the file system"):
        quarantine.check_filesystem()


def test_prune_and_restore_round_trip_byte_identical(server):
    before = snapshot(server.root)
    profile_before = open(server.params["profile_path"], "rb").read()
    result = run(server, state="pruned")
    assert result["changed"] is True and result["pruned"] == ["php/7.4", "python/3.7"]
    langs_dir = server.params["langs_dir"]
    assert sorted(os.listdir(f"{langs_dir}/php")) == ["5.6", "8.1"]
    assert yaml.safe_load(open(server.params["profile_path"]))["languages"] == {
        "php": ["5.6", "8.1"],
        "python": ["3.9"],
    }
    assert oct(os.stat(server.params["profile_path"]).st_mode & 0o777) == "0o640"
    record = Journal(server.params["journal_dir"]).read_record("lang_prune")
    assert [(e["id"], e["state"]) for e in record["runtimes"]] == [
        ("php/7.4", "quarantined"),
        ("python/3.7", "quarantined"),
    ]
    assert os.path.exists(server.params["quarantine_dir"] + "/php/7.4.manifest.json")
    assert run(server, state="pruned")["changed"] is False

    restored = run(server, state="restored")
    assert restored["changed"] is True and restored["restored"] == ["php/7.4", "python/3.7"]
    assert open(server.params["profile_path"], "rb").read() == profile_before
    assert snapshot(server.root) == before
    assert run(server, state="restored")["changed"] is False


def test_check_mode_writes_nothing(server):
    before = snapshot(server.root)
    for state, force in [("report", False), ("pruned", False), ("pruned", True), ("restored", False)]:
        result = run(server, check_mode=True, state=state, force=force)
        assert result["changed"] is (state == "pruned")
        assert snapshot(server.root) == before
        assert not os.path.exists(server.params["journal_dir"])
    run(server, state="pruned")
    pruned = snapshot(server.root)
    planned = run(server, check_mode=True, state="restored")
    assert planned["changed"] is True and planned["restored"] == ["php/7.4", "python/3.7"]
    assert planned["diff"]["after"]["installed"]["php"] == ["5.6", "7.4", "8.1"]
    assert snapshot(server.root) == pruned


def test_restore_refuses_a_changed_runtime_and_changes_nothing(server):
    run(server, state="pruned")
    changed_file = os.path.join(server.params["quarantine_dir"], "python", "3.7", "lib", "VERSION")
    with open(changed_file, "a") as handle:
        handle.write("tampered\n")
    before = snapshot(server.root)
    with pytest.raises(langs.LangError, match=r"python/3.7 .* lib/VERSION: sha256, size differ"):
        run(server, state="restored")
    assert snapshot(server.root) == before


def test_restore_refuses_a_profile_changed_by_someone_else(server):
    run(server, state="pruned")
    with open(server.params["profile_path"], "a") as handle:
        handle.write("# edited by hand\n")
    with pytest.raises(langs.LangError, match="changed since the prune"):
        run(server, state="restored")
    assert os.path.isdir(server.params["quarantine_dir"] + "/php/7.4")
    assert run(server, state="restored", force=True)["restored"] == ["php/7.4", "python/3.7"]


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at_save", [1, 2, 3])
def test_restore_finishes_a_prune_killed_half_way(server, kill_at_save):
    """A kill at the record write before the first rename (1), after it (2) or before the second rename (3)."""
    before = snapshot(server.root)
    journal = Journal(server.params["journal_dir"])
    saves = []

    def save_then_die(record):
        journal.write_record("lang_prune", record)
        saves.append(1)
        if len(saves) == kill_at_save:
            raise Killed

    prune = lang_prune.LangPrune(
        SimpleNamespace(params={**server.params, "state": "pruned"}, check_mode=False, _diff=False)
    )
    prune.quarantine.save_record = save_then_die
    with pytest.raises(Killed):
        prune.run()
    if kill_at_save == 1:
        # Killed after recording php/7.4 as "moving" and before its manifest: it never left its place.
        assert os.path.isdir(server.params["langs_dir"] + "/php/7.4")
    else:
        assert os.path.isdir(server.params["quarantine_dir"] + "/php/7.4")
    restored = run(server, state="restored")
    assert restored["changed"] is True
    assert snapshot(server.root) == before
    assert journal.read_record("lang_prune") is None


def test_restore_after_a_prune_killed_between_manifest_and_rename(server, monkeypatch):
    before = snapshot(server.root)

    def killed(src, dst):
        raise Killed

    monkeypatch.setattr(langs.os, "rename", killed)
    with pytest.raises(Killed):
        run(server, state="pruned")
    monkeypatch.undo()
    assert os.path.exists(server.params["quarantine_dir"] + "/php/7.4.manifest.json")
    assert os.path.isdir(server.params["langs_dir"] + "/php/7.4")
    restored = run(server, state="restored")
    assert restored["changed"] is True and restored["restored"] == []
    assert snapshot(server.root) == before


def test_restore_finishes_a_restore_killed_half_way(server, monkeypatch):
    before = snapshot(server.root)
    run(server, state="pruned", force=True)
    real_rename = os.rename
    calls = []

    def rename_once(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise Killed
        real_rename(src, dst)

    monkeypatch.setattr(langs.os, "rename", rename_once)
    with pytest.raises(Killed):
        run(server, state="restored")
    monkeypatch.setattr(langs.os, "rename", real_rename)
    record = Journal(server.params["journal_dir"]).read_record("lang_prune")
    assert record is not None and len(record["runtimes"]) == 4
    restored = run(server, state="restored")
    assert len(restored["restored"]) == 3
    assert snapshot(server.root) == before


def test_manifest_file_is_checked_against_the_record(server):
    run(server, state="pruned")
    path = server.params["quarantine_dir"] + "/php/7.4.manifest.json"
    manifest = json.load(open(path))
    manifest["entries"][0]["mode"] = "0777"
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    with pytest.raises(langs.LangError, match="not the one recorded"):
        run(server, state="restored")
