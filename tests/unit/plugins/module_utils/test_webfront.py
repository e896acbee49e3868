"""The web front's maps: what may enter them, and exact edits with the previous values kept for an undo."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import webfront
from ansible_collections.hosting.migration.plugins.module_utils.hosts import LocalHost


@pytest.mark.parametrize("value", ["maintenance", "10.77.0.11:80", "[2001:db8::1]:8080"])
def test_valid_backends(value):
    assert webfront.validate_backend(value) == value


@pytest.mark.parametrize("value", ["10.77.0.11", "host:80", "10.77.0.11:0", "10.77.0.11:80; evil", "[zz::1]:80", ""])
def test_hostile_backends_are_refused(value):
    with pytest.raises(ValueError):
        webfront.validate_backend(value)


@pytest.mark.parametrize("value", ["/home/a/www", "/home/a/www/a-b.test"])
def test_valid_docroots(value):
    assert webfront.validate_docroot(value) == value


@pytest.mark.parametrize("value", ["home/a", "/home/a/../../etc", "/home/a b", "/home/a;", "/home/$x", "/home/{a}"])
def test_hostile_docroots_are_refused(value):
    with pytest.raises(ValueError):
        webfront.validate_docroot(value)


def test_apply_changes_records_previous_values_and_round_trips():
    text = webfront.render_map({"a.test": "local-ignored", "b.test": "10.0.0.1:80"})
    new, previous = webfront.apply_changes(text, {"a.test": "maintenance", "c.test": "10.0.0.2:80", "b.test": None})
    assert webfront.parse_map(new) == {"a.test": "maintenance", "c.test": "10.0.0.2:80"}
    assert previous == {"a.test": "local-ignored", "c.test": None, "b.test": "10.0.0.1:80"}
    restored, _previous = webfront.apply_changes(new, previous)
    assert webfront.parse_map(restored) == webfront.parse_map(text)


def test_unchanged_entries_are_not_reported():
    text = webfront.render_map({"a.test": "maintenance"})
    new, previous = webfront.apply_changes(text, {"a.test": "maintenance", "b.test": None})
    assert previous == {} and new == text


def test_a_map_line_nginx_would_misread_is_an_error():
    with pytest.raises(ValueError, match="unexpected line"):
        webfront.parse_map("a.test 10.0.0.1:80\n")


def test_concurrent_map_updates_lose_no_entry(tmp_path):
    """Moves running at once each change their own domains in the one front map: every change must land (a plain
    read-modify-write loses some, which once left a switched account on the maintenance page)."""
    path = str(tmp_path / "backends.map")
    host = LocalHost()

    def move(worker):
        for step in range(15):
            webfront.update_map(host, path, {f"site{worker}-{step}.test": "maintenance"})
            webfront.update_map(host, path, {f"site{worker}-{step}.test": "10.77.0.11:80"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(move, range(8)))
    with open(path, encoding="utf-8") as handle:
        entries = webfront.parse_map(handle.read())
    assert entries == {f"site{w}-{s}.test": "10.77.0.11:80" for w in range(8) for s in range(15)}


def test_a_map_update_in_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "backends.map"
    previous = webfront.update_map(LocalHost(), str(path), {"a.test": "maintenance"}, check_mode=True)
    assert previous == {"a.test": None} and not path.exists()


@pytest.mark.parametrize(("backend", "address"), [("10.77.0.11:80", "10.77.0.11"), ("[fd77::11]:8080", "fd77::11")])
def test_the_mail_relay_address_is_the_backends_address(backend, address):
    assert webfront.backend_address(backend) == address


def test_a_mail_relay_address_comes_only_from_a_valid_backend():
    with pytest.raises(ValueError, match="invalid backend"):
        webfront.backend_address("maintenance; include /etc/passwd")


def test_redirect_mail_turns_the_hold_into_a_relay_and_keeps_it_held(tmp_path):
    from ansible_collections.hosting.migration.plugins.module_utils import freeze

    hold_dir = tmp_path / "mail-hold"
    assert freeze.hold_mail(LocalHost(), str(hold_dir), "alice") is True
    assert (hold_dir / "alice").read_text() == ""
    freeze.redirect_mail(LocalHost(), str(hold_dir), "alice", "10.77.0.11")
    assert (hold_dir / "alice").read_text() == "relay 10.77.0.11\n"
    assert sorted(p.name for p in hold_dir.iterdir()) == ["alice"]
    assert freeze.hold_mail(LocalHost(), str(hold_dir), "alice") is False  # still held: a second hold takes nothing
