"""account_services on the local machine: definitions set aside, copied, installed; each manager reloaded only when
its directory changed; bad options refused before anything happens."""

from __future__ import annotations

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import account_services
from ansible_collections.hosting.migration.plugins.module_utils.hosts import LocalHost


def managers(tmp_path, log):
    options = [
        {"name": name, "dir": str(tmp_path / name), "reload": ["sh", "-c", f'echo {name} >> "{log}"']}
        for name in ("php-fpm", "supervisor")
    ]
    for option in options:
        (tmp_path / option["name"]).mkdir()
    return account_services.managers_from_options(options)


class MemoryHost:
    """A server whose files are a dict: the other side of a copy."""

    name = "memory"

    def __init__(self, files=None):
        self.files = dict(files or {})

    def read_text(self, path):
        return self.files.get(path)

    def write_text(self, path, text, mode=0o644):
        self.files[path] = text

    def run(self, argv, input=None, timeout=None):
        assert argv[:3] == ["rm", "-f", "--"], argv
        self.files.pop(argv[3], None)
        return 0, "", ""


def test_stop_then_start_moves_each_definition_and_reloads_only_its_manager(tmp_path):
    log = tmp_path / "reloads.log"
    found = managers(tmp_path, log)
    (tmp_path / "php-fpm" / "alice.conf").write_text("[alice]\nuser = alice\n")
    held = tmp_path / "held"

    assert account_services.stop(LocalHost(), found, str(held), "alice") == ["php-fpm"]
    assert not (tmp_path / "php-fpm" / "alice.conf").exists()
    assert (held / "alice.service.php-fpm.conf").read_text() == "[alice]\nuser = alice\n"
    assert log.read_text() == "php-fpm\n"
    # A re-run finds nothing to set aside and reloads nothing.
    assert account_services.stop(LocalHost(), found, str(held), "alice") == []
    assert log.read_text() == "php-fpm\n"

    assert account_services.start(LocalHost(), found, str(held), "alice") == ["php-fpm"]
    assert (tmp_path / "php-fpm" / "alice.conf").read_text() == "[alice]\nuser = alice\n"
    assert not (held / "alice.service.php-fpm.conf").exists()
    assert log.read_text() == "php-fpm\nphp-fpm\n"
    assert account_services.start(LocalHost(), found, str(held), "alice") == []


def test_copy_held_copies_what_the_source_holds_and_removes_a_stale_copy(tmp_path):
    found = managers(tmp_path, tmp_path / "log")
    held = tmp_path / "held"
    held.mkdir()
    (held / "bob.service.supervisor.conf").write_text("[program:bob]\n")
    stale = str(held / "bob.service.php-fpm.conf")
    destination = MemoryHost({stale: "stale\n"})

    account_services.copy_held(LocalHost(), destination, found, str(held), "bob")
    assert destination.files == {str(held / "bob.service.supervisor.conf"): "[program:bob]\n"}
    assert account_services.fingerprints(LocalHost(), found, str(held), "bob") == account_services.fingerprints(
        destination, found, str(held), "bob"
    )
    assert account_services.fingerprints(destination, found, str(held), "bob")["php-fpm"] is None


def test_a_failing_reload_names_the_manager_and_server(tmp_path):
    (tmp_path / "pools").mkdir()
    (tmp_path / "pools" / "carol.conf").write_text("[carol]\n")
    broken = account_services.managers_from_options(
        [{"name": "php-fpm", "dir": str(tmp_path / "pools"), "reload": ["sh", "-c", "echo bad pool >&2; exit 78"]}]
    )
    with pytest.raises(account_services.ServiceError, match=r"php-fpm on destination: reload failed \(exit 78\)"):
        account_services.stop(LocalHost(), broken, str(tmp_path / "held"), "carol")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"name": "PHP FPM", "dir": "/etc/x", "reload": ["true"]}, "invalid service manager name"),
        ({"name": "php", "dir": "etc/x", "reload": ["true"]}, "absolute path"),
        ({"name": "php", "dir": "/etc/../root", "reload": ["true"]}, "absolute path"),
        ({"name": "php", "dir": "/etc/x", "reload": []}, "reload must be a command"),
        ({"name": "php", "dir": "/etc/x", "reload": [""]}, "reload must be a command"),
    ],
)
def test_bad_manager_options_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        account_services.managers_from_options([option])


def test_a_manager_listed_twice_is_refused():
    twice = [{"name": "php", "dir": "/a", "reload": ["true"]}, {"name": "php", "dir": "/b", "reload": ["true"]}]
    with pytest.raises(ValueError, match="listed twice"):
        account_services.managers_from_options(twice)
