"""ssh.py and rsync.py as account_move uses them: running inside transit under Debian's python3, pulling alice's
home and Maildirs from client over real SSH (a key of transit's own, client's host key pinned), checked by this
test's own listing of both hosts (lstat, sha256, raw xattrs, getfacl, getfattr), not by rsync."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from conftest import LAB, REPO, run

pytestmark = pytest.mark.lab

PYTHON = "/usr/bin/python3"  # Debian's, as on a managed host; PATH inside a lab host may name the controller's
KEY = "/root/.ssh/hosting_migration_test_ed25519"
KNOWN_HOSTS = "/root/.ssh/hosting_migration_test_known_hosts"
KEY_COMMENT = "hosting-migration-test-rsync-ssh"
SHIPPED = ["account.py", "ssh.py", "rsync.py"]
SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text())

# Removes the lines of authorized_keys (argv[1]) that end with this test's key comment (argv[2]), in place: the
# file keeps its inode and mode, and every other key (the controller's, a migration key) stays.
REMOVE_KEY = """
import sys
path, comment = sys.argv[1:]
with open(path, "r+") as handle:
    kept = [line for line in handle.read().splitlines(True) if not line.rstrip("\\n").endswith(" " + comment)]
    handle.seek(0)
    handle.writelines(kept)
    handle.truncate()
"""

# Writes the files of a JSON {path: text} on stdin: the module_utils, shipped like Ansible ships them, so that a
# checkout in /tmp (private to each lab host) works too.
WRITE_FILES = """
import json, os, sys
for path, text in json.load(sys.stdin).items():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
"""

# Calls module_utils inside the host: a JSON request on stdin, the JSON result on stdout.
CALL = """
import dataclasses, json, sys
from ansible_collections.hosting.migration.plugins.module_utils import rsync
from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshError, SshTarget

request = json.load(sys.stdin)
target = SshTarget(**request.pop("target"))
call = request.pop("call")
if call == "pull":
    progress = []
    result = dataclasses.asdict(rsync.pull(target, progress=progress.append, **request))
    result["progress"] = [dataclasses.asdict(update) for update in progress]
elif call == "differences":
    result = [[change.path, change.reasons()] for change in rsync.differences(target, **request)]
elif call == "maildirs":
    source = rsync.maildir_messages(request["source"], target)
    copy = rsync.maildir_messages(request["dest"])
    result = {
        "source": {box: sorted(names) for box, names in source.items()},
        "copy": {box: sorted(names) for box, names in copy.items()},
        "differences": rsync.compare_maildirs(source, copy),
    }
elif call == "run":
    try:
        result = dataclasses.asdict(target.run(request["argv"], timeout=request.get("timeout", 60)))
    except SshError as error:
        result = {"error": str(error)}
print(json.dumps(result))
"""

# The test's own view of a tree: every entry's type, mode, owner, mtime, symlink target, raw xattrs (ACLs are the
# system.posix_acl_* ones), sha256 of regular files, and which names share an inode.
SNAPSHOT = """
import hashlib, json, os, stat, sys
root = os.fsencode(sys.argv[1])
entries, inodes = {}, {}
for directory, dirs, files in os.walk(root):
    names = [b""] if directory == root else []
    for path in [os.path.join(directory, name) for name in names + dirs + files]:
        relative = os.fsdecode(os.path.relpath(path, root))
        info = os.lstat(path)
        entry = {
            "type": stat.S_IFMT(info.st_mode), "mode": stat.S_IMODE(info.st_mode),
            "uid": info.st_uid, "gid": info.st_gid, "mtime_ns": info.st_mtime_ns,
            "xattrs": {
                os.fsdecode(key): os.getxattr(path, key, follow_symlinks=False).hex()
                for key in sorted(os.listxattr(path, follow_symlinks=False))
            },
        }
        if stat.S_ISLNK(info.st_mode):
            entry["target"] = os.fsdecode(os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            with open(path, "rb") as handle:
                entry["sha256"] = hashlib.sha256(handle.read()).hexdigest()
            inodes.setdefault(info.st_ino, []).append(relative)
        entries[relative] = entry
entries["hard link groups"] = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
print(json.dumps(entries))
"""


def in_host(host: str, argv: list[str], input: str | None = None, check: bool = True):
    return run([LAB, "exec", host, "--", *argv], input=input, check=check)


def snapshot(host: str, root: str) -> dict:
    return json.loads(in_host(host, [PYTHON, "-c", SNAPSHOT, root]).stdout)


def blocks(host: str, root: str, tool: list[str]) -> list[str]:
    """getfacl/getfattr over a tree, one block per entry, in a fixed order (readdir order differs per host)."""
    out = in_host(host, ["sh", "-c", 'cd "$1" && shift && "$@"', "sh", root, *tool]).stdout
    return sorted(block for block in out.split("\n\n") if block.strip())


def acls_and_xattrs(host: str, root: str) -> tuple[list[str], list[str]]:
    return (
        blocks(host, root, ["getfacl", "-R", "-P", "-p", "-n", "."]),  # -n: alice is no user on transit yet
        blocks(host, root, ["getfattr", "-R", "-P", "-d", "-m", "-", "-e", "hex", "."]),
    )


@pytest.fixture(scope="module")
def source_target(lab):
    """SSH from transit to client with a key of transit's own, accepted by client from transit's address only,
    and client's host key pinned in a known_hosts file of its own; all of it removed afterwards."""
    client, transit = lab.hosts["client"], lab.hosts["transit"]
    in_host("client", [PYTHON, "-c", REMOVE_KEY, "/root/.ssh/authorized_keys", KEY_COMMENT])  # a crashed run's
    in_host("transit", ["rm", "-f", KEY, f"{KEY}.pub", KNOWN_HOSTS])
    in_host("transit", ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", KEY_COMMENT, "-f", KEY])
    public_key = in_host("transit", ["cat", f"{KEY}.pub"]).stdout.strip()
    authorized = f'restrict,from="{transit.ipv4}" {public_key}'
    in_host("client", ["sh", "-c", 'printf "%s\\n" "$1" >> /root/.ssh/authorized_keys', "sh", authorized])
    host_key = " ".join(in_host("client", ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[:2])
    write = 'umask 077 && printf "%s\\n" "$1" > "$2"'
    in_host("transit", ["sh", "-c", write, "sh", f"{client.ipv4} {host_key}", KNOWN_HOSTS])
    yield {"host": client.ipv4, "key_file": KEY, "known_hosts_file": KNOWN_HOSTS}
    in_host("client", [PYTHON, "-c", REMOVE_KEY, "/root/.ssh/authorized_keys", KEY_COMMENT])
    in_host("transit", ["rm", "-f", KEY, f"{KEY}.pub", KNOWN_HOSTS])
    assert KEY_COMMENT not in in_host("client", ["cat", "/root/.ssh/authorized_keys"]).stdout


@pytest.fixture(scope="module")
def scratch(lab):
    """A private directory inside transit (its own /var), with the shipped module_utils; removed afterwards."""
    root = f"/var/tmp/hm-rsynctest-{uuid.uuid4().hex[:12]}"
    in_host("transit", ["install", "-d", "-m", "0700", root])
    lib = f"{root}/lib/ansible_collections/hosting/migration/plugins/module_utils"
    sources = {f"{lib}/{name}": (REPO / "plugins" / "module_utils" / name).read_text() for name in SHIPPED}
    in_host("transit", [PYTHON, "-c", WRITE_FILES], input=json.dumps(sources))
    yield root
    in_host("transit", ["rm", "-rf", "--one-file-system", root])
    assert in_host("transit", ["test", "-e", root], check=False).returncode == 1


@pytest.fixture(scope="module")
def alice_still(lab):
    """alice's home on client, kept still: her crontab set aside (cron reloads the spool before each minute's
    jobs) so her minute tick does not append between a pull and the comparison after it; given back afterwards."""
    hold = "mkdir -p /root/hm-held && mv /var/spool/cron/crontabs/alice /root/hm-held/ && sleep 1"
    in_host("client", ["sh", "-c", hold])
    yield
    in_host("client", ["sh", "-c", "mv /root/hm-held/alice /var/spool/cron/crontabs/ && rmdir /root/hm-held"])


@pytest.fixture
def call(source_target, scratch, alice_still):
    """Run a module_utils call inside transit against client; returns its JSON result."""

    def call_in_transit(name: str, target: dict | None = None, **request):
        request = {"call": name, "target": target or source_target, **request}
        command = ["env", f"PYTHONPATH={scratch}/lib", PYTHON, "-c", CALL]
        return json.loads(in_host("transit", command, input=json.dumps(request)).stdout)

    return call_in_transit


@pytest.fixture
def copy_path(scratch, request):
    return f"{scratch}/{request.node.name}"


def flip_byte_keeping_size_and_mtime(path: str) -> None:
    code = (
        "import os, sys\n"
        "path = sys.argv[1]\n"
        "info = os.stat(path)\n"
        "data = bytearray(open(path, 'rb').read())\n"
        "data[0] ^= 0xFF\n"
        "open(path, 'r+b').write(data)\n"
        "os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))\n"
    )
    in_host("transit", [PYTHON, "-c", code, path])


def test_pull_copies_alice_exactly_and_a_second_pull_transfers_nothing(call, copy_path):
    result = call("pull", source="/home/alice", dest=copy_path)
    original = snapshot("client", "/home/alice")
    assert snapshot("transit", copy_path) == original
    assert acls_and_xattrs("transit", copy_path) == acls_and_xattrs("client", "/home/alice")

    # What the seed put there to be hard is really there, not merely equal on both sides.
    odd = {path: entry for path, entry in original.items() if path.startswith("odd/")}
    assert {"odd/new\nline.txt", "odd/-leading-dash.txt", "odd/quote'and\"double.txt", "odd/back\\slash.txt"} <= set(
        odd
    )
    assert ["odd/data-hardlink.bin", "odd/data.bin"] in original["hard link groups"]
    assert odd["odd/xattr.txt"]["xattrs"]["user.hosting.comment"] == b"kept by rsync -X".hex()
    assert "system.posix_acl_access" in odd["odd/acl.txt"]["xattrs"]
    assert odd["odd/link-outside-home"]["target"] == "/etc/hostname"  # a link in the copy, never followed
    (acl,) = [
        block for block in acls_and_xattrs("transit", copy_path)[0] if block.startswith("# file: ./odd/acl.txt\n")
    ]
    assert "\nuser:33:r--\n" in acl  # www-data, Debian's uid 33

    assert result["rc"] == 0
    assert {change["path"] for change in result["changes"]} == set(original) - {"hard link groups"}
    assert result["number_of_files"] == len(original) - 1
    assert result["bytes_transferred"] > 0
    assert result["progress"] and result["progress"][-1]["files_total"] == result["number_of_files"]

    again = call("pull", source="/home/alice", dest=copy_path)
    assert again["changes"] == []
    assert (again["files_transferred"], again["bytes_transferred"]) == (0, 0)
    assert snapshot("transit", copy_path) == original


def test_dry_run_plans_everything_and_writes_nothing(call, copy_path):
    plan = call("pull", source="/home/alice", dest=copy_path, dry_run=True)
    assert plan["dry_run"]
    assert len(plan["changes"]) == len(snapshot("client", "/home/alice")) - 1
    assert plan["bytes_transferred"] > 0
    assert in_host("transit", ["test", "-e", copy_path], check=False).returncode == 1


def test_differences_find_a_flipped_byte_and_an_owner_change(call, copy_path):
    call("pull", source="/home/alice", dest=copy_path)
    assert call("differences", source="/home/alice", dest=copy_path) == []
    flip_byte_keeping_size_and_mtime(f"{copy_path}/odd/new\nline.txt")
    in_host("transit", ["chown", "0", f"{copy_path}/files/document-00.txt"])
    before = snapshot("transit", copy_path)

    # rsync's quick check (size, mtime) misses the flipped byte, and a dry run leaves the copy as it was.
    plan = call("pull", source="/home/alice", dest=copy_path, dry_run=True)
    assert [change["path"] for change in plan["changes"]] == ["files/document-00.txt"]
    assert snapshot("transit", copy_path) == before

    assert sorted(call("differences", source="/home/alice", dest=copy_path)) == [
        ["files/document-00.txt", ["owner"]],
        ["odd/new\nline.txt", ["content"]],
    ]


def test_maildirs_by_message_set(call, copy_path):
    call("pull", source="/var/mail/alice", dest=copy_path)
    assert snapshot("transit", copy_path) == snapshot("client", "/var/mail/alice")
    found = call("maildirs", source="/var/mail/alice", dest=copy_path)
    assert found["differences"] == {}
    assert {box: len(names) for box, names in found["source"].items()} == SEED["accounts"]["alice"]["mailboxes"]
    assert found["copy"] == found["source"]

    # Reading mail (new/ -> cur/ with a flag) changes files, not the message set; a lost message does.
    mailbox = next(iter(found["source"]))
    new = in_host("transit", ["ls", f"{copy_path}/{mailbox}/new"]).stdout.split()[0]
    in_host("transit", ["mv", f"{copy_path}/{mailbox}/new/{new}", f"{copy_path}/{mailbox}/cur/{new}:2,S"])
    assert call("maildirs", source="/var/mail/alice", dest=copy_path)["differences"] == {}
    assert call("differences", source="/var/mail/alice", dest=copy_path) != []
    cur = sorted(in_host("transit", ["ls", f"{copy_path}/{mailbox}/cur"]).stdout.split())[0]
    in_host("transit", ["rm", f"{copy_path}/{mailbox}/cur/{cur}"])
    assert call("maildirs", source="/var/mail/alice", dest=copy_path)["differences"] == {
        mailbox: {"missing": [cur.split(":")[0]], "extra": []}
    }


def test_ssh_run_quotes_arguments_and_checks_the_host_key(call, source_target, scratch):
    hostile = ["a b", "it's", '"q"', "$(id)", "`id`", "-rf", "back\\slash", "new\nline", "*", ""]
    result = call("run", argv=["printf", "%s\\0", *hostile])
    assert result["rc"] == 0
    assert result["stdout"].split("\0")[:-1] == hostile
    assert call("run", argv=["hostname"]) == {"rc": 0, "stdout": "client\n", "stderr": ""}
    assert call("run", argv=["sh", "-c", "exit 7"])["rc"] == 7

    # A known_hosts file with another host's key: refused at once, and the error names the host.
    wrong = f"{scratch}/wrong_known_hosts"
    transit_key = " ".join(in_host("transit", ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[:2])
    write = 'umask 077 && printf "%s\\n" "$1" > "$2"'
    in_host("transit", ["sh", "-c", write, "sh", f"{source_target['host']} {transit_key}", wrong])
    refused = call("run", target={**source_target, "known_hosts_file": wrong}, argv=["true"])
    assert refused["error"].startswith(f"SSH to root@{source_target['host']}:22 failed:")
    assert "Host key verification failed" in refused["error"]


# Holds an SSH session to client open, then drops this one connection's packets in transit's own nftables table and
# reports how long SshTarget.run took to give up. Only that TCP connection (its local port) is cut: other work
# between the lab hosts goes on.
CUT = r"""
import json, os, subprocess, sys, threading, time
from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshError, SshTarget

target = SshTarget(**json.load(sys.stdin), server_alive_interval=1, server_alive_count_max=2)
table = f"hmtest_cut_{os.getpid()}"
outcome = {}

def session():
    try:
        target.run(["sleep", "20"], timeout=120)
        outcome["error"] = None
    except SshError as error:
        outcome["error"] = str(error)
    outcome["ended"] = time.monotonic()

# The local port of the connection of this process's ssh child to the target, once established.
def connection_port():
    listing = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True, check=True)
    for line in listing.stdout.splitlines():
        local, peer = line.split()[2:4]
        if peer == target.host + ":22" and '"ssh",pid=' in line:
            pid = int(line.split("pid=")[1].split(",")[0])
            if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():  # ppid
                return local.rsplit(":", 1)[1]
    return None

thread = threading.Thread(target=session, daemon=True)
thread.start()
port = None
deadline = time.monotonic() + 20
while port is None and time.monotonic() < deadline:
    time.sleep(0.2)
    port = connection_port()
if port is None:
    sys.exit("found no SSH connection of this process to " + target.host)
time.sleep(1)  # the remote sleep runs
rule = f"table inet {table} {{\n chain out {{\n type filter hook output priority 0; tcp sport {port} drop\n }}\n}}\n"
subprocess.run(["nft", "-f", "-"], input=rule, text=True, check=True)
cut = time.monotonic()
try:
    thread.join(60)
finally:
    subprocess.run(["nft", "delete", "table", "inet", table], check=True)
print(json.dumps({"port": port, "error": outcome.get("error"), "seconds": outcome.get("ended", 1e9) - cut}))
"""


def test_a_cut_connection_fails_within_bounded_time(source_target, scratch):
    command = ["env", f"PYTHONPATH={scratch}/lib", PYTHON, "-c", CUT]
    result = json.loads(in_host("transit", command, input=json.dumps(source_target)).stdout)
    host = source_target["host"]
    assert result["error"] == f"SSH to root@{host}:22 failed: Timeout, server {host} not responding."
    # ServerAliveInterval 1 x ServerAliveCountMax 2: about 3 s, far from the 20 s the remote command would take.
    assert result["seconds"] < 10, result
