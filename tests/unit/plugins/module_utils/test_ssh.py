from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.hosting.migration.plugins.module_utils.ssh import (
    SshError,
    SshResult,
    SshTarget,
    remote_command,
    rsync_rsh_quote,
)

# Arguments a shell or an argument parser would misread if they were not quoted exactly.
HOSTILE_ARGS = [
    "plain",
    "",
    " ",
    "two words",
    "-rf",
    "--delete",
    "a'b",
    'a"b',
    "'",
    "''",
    "back\\slash",
    "\\#134",
    "new\nline",
    "tab\there",
    "$(touch /tmp/pwned-by-hm-test)",
    "`id`",
    "$HOME",
    "${IFS}",
    "~",
    "~root",
    "*",
    "?",
    "[a-z]",
    "a;b",
    "a|b",
    "a&&b",
    "a>b",
    "#comment",
    "!",
    "ünïcödé-名前",
    "%h %p %%",
]

FAKE_SSH = '''\
"""Stands in for OpenSSH: logs its argv, then runs the remote command with sh -c on this machine, as the remote
user's login shell would (OpenSSH joins the command's arguments with spaces)."""
import json, os, subprocess, sys, time

args = sys.argv[1:]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
i = 0
while args[i] != "--" and args[i].startswith("-"):
    i += 2 if args[i] in ("-o", "-p", "-l", "-i") else 1
i += args[i] == "--"
host, command = args[i], " ".join(args[i + 1:])
if host == "unreachable.invalid":
    print("ssh: Could not resolve hostname unreachable.invalid: Name or service not known", file=sys.stderr)
    sys.exit(255)
if not os.environ.get("FAKE_SSH_SLOW"):
    sys.exit(subprocess.run(["sh", "-c", command]).returncode)
# Relay the remote side's output at about 10 MB/s, so that a test can interrupt a transfer midway.
proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE)
while chunk := proc.stdout.read1(65536):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    time.sleep(0.005)
sys.exit(proc.wait())
'''


def install_fake_ssh(directory: Path, monkeypatch) -> Path:
    """Put a fake `ssh` first on PATH (for SshTarget.run and for rsync -e); return the file its calls are logged in."""
    bindir = directory / "fake-ssh-bin"
    bindir.mkdir()
    script = bindir / "ssh"
    script.write_text(f"#!{sys.executable}\n{FAKE_SSH}")
    script.chmod(0o755)
    log = directory / "fake-ssh.log"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return log


def logged_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    return install_fake_ssh(tmp_path, monkeypatch)


def option_values(argv):
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]


def test_argv_is_batch_mode_key_only_with_bounded_timeouts():
    target = SshTarget("10.77.0.10", key_file="/root/.ssh/key", known_hosts_file="/root/.ssh/known")
    argv = target.argv()
    assert argv[0] == "ssh"
    assert argv[-2:] == ["--", "10.77.0.10"]
    options = option_values(argv)
    for option in [
        "BatchMode=yes",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/root/.ssh/known",
        "GlobalKnownHostsFile=/dev/null",
        "IdentitiesOnly=yes",
        "ConnectTimeout=10",
        "ServerAliveInterval=10",
        "ServerAliveCountMax=3",
    ]:
        assert option in options
    assert argv[argv.index("-i") + 1] == "/root/.ssh/key"
    assert argv[argv.index("-p") + 1] == "22"
    assert argv[argv.index("-l") + 1] == "root"


def test_openssh_accepts_every_option(tmp_path):
    """ssh -G parses the options like a real connection would (no network): a typo would make it fail."""
    key = tmp_path / "key"
    key.write_text("")
    target = SshTarget(
        "transit.example",
        user="deploy",
        port=2222,
        key_file=str(key),
        known_hosts_file="/srv/known_hosts",
        connect_timeout=7,
        server_alive_interval=5,
        server_alive_count_max=2,
    )
    proc = subprocess.run([*target.options(), "-G", "transit.example"], capture_output=True, text=True, check=True)
    config = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert config["batchmode"] == "yes"
    assert config["passwordauthentication"] == "no"
    assert config["kbdinteractiveauthentication"] == "no"
    assert config["stricthostkeychecking"] == "true"
    assert config["userknownhostsfile"] == "/srv/known_hosts"
    assert config["globalknownhostsfile"] == "/dev/null"
    assert config["connecttimeout"] == "7"
    assert config["serveraliveinterval"] == "5"
    assert config["serveralivecountmax"] == "2"
    assert config["port"] == "2222"
    assert config["user"] == "deploy"
    assert f"identityfile {key}" in proc.stdout.splitlines()
    assert config["identitiesonly"] == "yes"


def test_no_key_and_no_known_hosts_leave_ssh_defaults():
    options = option_values(SshTarget("client").argv())
    assert "StrictHostKeyChecking=yes" in options
    assert not [o for o in options if o.startswith(("UserKnownHostsFile", "GlobalKnownHostsFile", "IdentitiesOnly"))]


@pytest.mark.parametrize("host", ["client", "transit.example.org", "10.77.0.10", "fd77::10", "2001:db8:77::10", "a"])
def test_valid_hosts(host):
    assert SshTarget(host).argv()[-1] == host


@pytest.mark.parametrize(
    "host",
    [
        "",
        "-oProxyCommand=touch /tmp/pwned",
        "-p",
        "root@client",
        "client:22",
        "client name",
        "client;id",
        "client\n",
        "$(id)",
        "client/x",
        ".client",
        "client.",
        "x" * 254,
        None,
        b"client",
    ],
)
def test_hostile_hosts_are_refused(host):
    with pytest.raises(ValueError, match="invalid SSH host"):
        SshTarget(host)


@pytest.mark.parametrize("user", ["", "-l", "root@x", "a b", "Root", "a;b", "x" * 33, None, 0])
def test_hostile_users_are_refused(user):
    with pytest.raises(ValueError, match="invalid SSH user"):
        SshTarget("client", user=user)


@pytest.mark.parametrize("port", [0, -1, 65536, "22", 22.0, None, True])
def test_bad_ports_are_refused(port):
    with pytest.raises(ValueError, match="invalid SSH port"):
        SshTarget("client", port=port)


@pytest.mark.parametrize("timeout", [0, -5, "10", None, True, 1.5])
def test_bad_timeouts_are_refused(timeout):
    with pytest.raises(ValueError, match="connect_timeout must be a positive integer"):
        SshTarget("client", connect_timeout=timeout)


@pytest.mark.parametrize(
    "path", ["relative/key", "/with space", "/tab\tkey", "/per%cent", "/quo'te", '/dq"x', "/back\\slash", "/nl\nx", 1]
)
def test_unsafe_key_and_known_hosts_paths_are_refused(path):
    with pytest.raises(ValueError, match="key_file must be an absolute path"):
        SshTarget("client", key_file=path)
    with pytest.raises(ValueError, match="known_hosts_file must be an absolute path"):
        SshTarget("client", known_hosts_file=path)


def test_remote_command_survives_the_remote_shell():
    """What the remote login shell makes of the command string is exactly the argv we meant."""
    command = remote_command(["printf", "%s\\0", *HOSTILE_ARGS])
    out = subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    assert out.decode().split("\0")[:-1] == HOSTILE_ARGS


@pytest.mark.parametrize("command", [[], "ls -la", ()])
def test_remote_command_must_be_an_argv(command):
    with pytest.raises(ValueError, match="non-empty list"):
        remote_command(command)


def test_a_command_starting_with_a_dash_is_not_an_ssh_option():
    argv = SshTarget("client").argv(["-V"])
    assert argv[-3:] == ["--", "client", "-V"]


def test_rsh_is_split_back_by_rsync_into_the_same_argv(fake_ssh, tmp_path):
    """rsync splits -e itself (quotes, doubled quotes, no backslashes): run the real rsync with our string."""
    target = SshTarget("client", key_file="/srv/key", known_hosts_file="/srv/known")
    subprocess.run(
        ["rsync", "--rsh", target.rsh(), "--list-only", f"client:{tmp_path}/"], capture_output=True, check=True
    )
    options = target.options()
    call = logged_calls(fake_ssh)[0]
    assert call[: len(options) - 1] == options[1:]
    assert call[len(options) - 1] == "client"


@pytest.mark.parametrize("arg", HOSTILE_ARGS)
def test_rsync_rsh_quote_round_trips_through_rsync(fake_ssh, tmp_path, arg):
    rsh = " ".join(rsync_rsh_quote(word) for word in ["ssh", "-o", arg])
    subprocess.run(["rsync", "--rsh", rsh, "--list-only", f"client:{tmp_path}/"], capture_output=True, check=False)
    assert logged_calls(fake_ssh)[0][:3] == ["-o", arg, "client"]


def test_run_returns_exact_output_and_exit_code(fake_ssh):
    target = SshTarget("client")
    result = target.run(["printf", "%s\\0", *HOSTILE_ARGS])
    assert result.rc == 0
    assert result.stdout.split("\0")[:-1] == HOSTILE_ARGS
    assert not Path("/tmp/pwned-by-hm-test").exists()
    assert target.run(["sh", "-c", "echo oops >&2; exit 3"]) == SshResult(3, "", "oops\n")
    assert logged_calls(fake_ssh)[0][:-1] == target.argv()[1:]


def test_run_passes_input_and_keeps_undecodable_bytes(fake_ssh):
    target = SshTarget("client")
    assert target.run(["cat"], input="line 1\nline 2\n").stdout == "line 1\nline 2\n"
    raw = b"\xff\xfe name \x80"
    result = target.run(["cat"], input=raw)
    assert os.fsencode(result.stdout) == raw


def test_run_without_input_gives_the_remote_command_no_stdin(fake_ssh):
    assert SshTarget("client").run(["cat"], timeout=10).stdout == ""


def test_ssh_failure_names_the_host(fake_ssh):
    with pytest.raises(SshError, match=r"SSH to root@unreachable\.invalid:22 failed: ssh: Could not resolve"):
        SshTarget("unreachable.invalid").run(["true"])


def test_timeout_names_the_host(fake_ssh):
    started = time.monotonic()
    with pytest.raises(SshError, match=r"SSH to root@client:22 timed out after 0\.5 s"):
        SshTarget("client").run(["sleep", "3"], timeout=0.5)
    assert time.monotonic() - started < 10


def test_child_dies_with_its_parent(tmp_path):
    """A process that starts a child with die_with_parent and is SIGKILLed takes the child with it."""
    code = (
        "import subprocess, sys, time\n"
        "from ansible_collections.hosting.migration.plugins.module_utils.ssh import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    collections = str(Path(__file__).resolve().parents[4] / "collections")
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": collections}
    )
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_shlex_join_is_what_reaches_ssh():
    assert SshTarget("client").argv(["ls", "-la", "a b"])[-1] == shlex.join(["ls", "-la", "a b"])
