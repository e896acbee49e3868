import pytest
import yaml

from ansible_collections.hosting.migration.plugins.doc_fragments.account import ModuleDocFragment
from ansible_collections.hosting.migration.plugins.module_utils.account import (
    ACCOUNT_NAME_PATTERN,
    account_argument_spec,
    is_subpath,
    validate_account_name,
    validate_domain,
)

VALID_NAMES = [
    "ab",
    "alice",
    "web1",
    "a1",
    "a" + "b" * 31,  # 32 characters, the longest allowed
    "z0000000",
]

HOSTILE_NAMES = [
    "",
    "a",  # too short
    "a" + "b" * 32,  # 33 characters
    "a" * 200,
    "Alice",
    "ALICE",
    "1alice",
    "9",
    "_alice",
    "-alice",
    "-rf",
    "--delete",
    "ali-ce",
    "ali_ce",
    "ali.ce",
    ".alice",
    "..",
    "../alice",
    "alice/..",
    "alice/x",
    "/alice",
    "alice\\x",
    "alice'",
    "ali'ce",
    'alice"',
    "alice`id`",
    "`id`",
    "$(id)",
    "alice;id",
    "alice|id",
    "alice&",
    "alice>x",
    "alice*",
    "alice?",
    "alice%",
    "alice x",
    " alice",
    "alice ",
    "alice\t",
    "alice\n",  # `$` alone would let this one through
    "\nalice",
    "alice\r",
    "alice\0",
    "\0",
    "ali\0ce",
    "alicé",
    "аlice",  # Cyrillic a
    "ａlice",  # fullwidth a
    "alice\u200b",  # zero-width space
    "alice@example",
    "alice:x",
    "alice,bob",
    "alice#",
    "alice=1",
]

NON_STRINGS = [None, 1, 0, True, 1.5, b"alice", bytearray(b"alice"), ["alice"], ("alice",), {"alice": 1}, object()]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names_are_returned_unchanged(name):
    assert validate_account_name(name) == name


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid account name"):
        validate_account_name(name)


@pytest.mark.parametrize("name", NON_STRINGS, ids=lambda value: type(value).__name__)
def test_non_strings_are_refused(name):
    with pytest.raises(ValueError, match="must be a string"):
        validate_account_name(name)


def test_message_names_the_rule_and_shows_control_characters():
    with pytest.raises(ValueError) as raised:
        validate_account_name("bad\nname")
    message = str(raised.value)
    assert ACCOUNT_NAME_PATTERN in message
    assert "'bad\\nname'" in message
    assert "\n" not in message


def test_message_shortens_huge_names():
    with pytest.raises(ValueError) as raised:
        validate_account_name("x" * 10000)
    assert len(str(raised.value)) < 300


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("/home/alice", "/home/alice"),
        ("/home/alice/", "/home/alice"),
        ("/home/alice/www/index.php", "/home/alice"),
        ("/home/alice//www/./index.php", "/home/alice"),
        ("/home/alice/.hidden", "/home/alice"),
        ("/home/alice/...", "/home/alice"),  # a file named '...' is not a parent reference
        ("/home/alice/..x", "/home/alice"),
        ("/home/alice/x..", "/home/alice"),
        ("/var/mail/alice/inbox", "/var/mail/alice/"),
        ("/home/alice/www", "//home//alice/."),
        ("/etc/passwd", "/"),
    ],
)
def test_paths_inside_root_are_accepted(path, root):
    assert is_subpath(path, root) is True


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("/home/alice/../bob", "/home/alice"),
        ("/home/alice/..", "/home/alice"),
        ("/home/alice/www/../../bob", "/home/alice"),
        ("/home/alice/www/../index.php", "/home/alice"),  # would be inside, but only if www is no symlink
        ("/home/alice/..//..", "/home/alice"),
        ("/home/alicebob", "/home/alice"),  # a common prefix of text is not a parent directory
        ("/home/alice2/www", "/home/alice"),
        ("/home", "/home/alice"),
        ("/", "/home/alice"),
        ("/etc/passwd", "/home/alice"),
        ("home/alice/www", "/home/alice"),  # relative: depends on a working directory we do not know
        ("alice", "/home/alice"),
        ("./home/alice", "/home/alice"),
        ("", "/home/alice"),
        ("/home/alice/www\0/x", "/home/alice"),
        ("/home/alice\0", "/home/alice"),
        ("/home/alice/..", "/"),
        ("/../etc", "/"),
        (None, "/home/alice"),
        (b"/home/alice/www", "/home/alice"),
        (["/home/alice"], "/home/alice"),
    ],
)
def test_paths_outside_root_or_unjudgeable_are_refused(path, root):
    assert is_subpath(path, root) is False


@pytest.mark.parametrize(
    "root", ["", "home/alice", "/home/alice/..", "/home/../alice", "/home/al\0ice", None, b"/home"]
)
def test_malformed_root_raises(root):
    with pytest.raises(ValueError, match="root must be an absolute path"):
        is_subpath("/home/alice", root)


def test_argument_spec_matches_doc_fragment():
    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    spec = account_argument_spec()
    assert spec.keys() == documented.keys()
    for option, settings in spec.items():
        assert {key: documented[option][key] for key in settings} == settings


def test_doc_fragment_states_the_pattern():
    assert ACCOUNT_NAME_PATTERN in ModuleDocFragment.DOCUMENTATION


@pytest.mark.parametrize("name", ["alice-shop.test", "www.alice-shop.test", "xn--bcher-kva.example", "a.b.c.d.e"])
def test_valid_domains(name):
    assert validate_domain(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "test", "-a.test", "a-.test", "A.test", "a..test", "a.test;", "a.test default", "a/b.test", "a.test\n",
     "a" * 64 + ".test", "a'.test", "$host.test", None, 42],
)  # fmt: skip
def test_hostile_domains_are_refused(name):
    with pytest.raises(ValueError, match="invalid domain"):
        validate_domain(name)
