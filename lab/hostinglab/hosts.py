"""A lab host's private filesystem view: its own mount and UTS namespace with overlays over /etc and /var, and
private /home, /root, /opt/hosting, /run and /tmp, so services keep their default paths and each host has its
own users. The namespaces are kept alive by bind-mounted handles under /run/hosting-lab/ns."""

from __future__ import annotations

import os
import shutil

from .config import NETNS_DIR, NS_HANDLES, RUN_DIR, STATE_DIR
from .proc import run

PRIVATE_DIRS = {"/home": "home", "/root": "root", "/opt/hosting": "opt-hosting"}


def host_dir(name: str):
    return STATE_DIR / "hosts" / name


def _is_mountpoint(path) -> bool:
    return run(["findmnt", "-n", "-M", str(path)], check=False).strip() != ""


def prepare_handles_dir() -> None:
    # unshare(1) can only persist a mount namespace on a file inside a private mount.
    NS_HANDLES.mkdir(parents=True, exist_ok=True)
    if not _is_mountpoint(NS_HANDLES):
        run(["mount", "--bind", str(NS_HANDLES), str(NS_HANDLES)])
    run(["mount", "--make-private", str(NS_HANDLES)])


def create_host_fs(name: str) -> None:
    base = host_dir(name)
    for layer in ("etc", "var"):
        for part in ("upper", "work"):
            (base / f"{layer}.{part}").mkdir(parents=True, exist_ok=True)
    for sub in PRIVATE_DIRS.values():
        (base / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(base / "root", 0o700)
    os.makedirs("/opt/hosting", exist_ok=True)
    for kind in ("mnt", "uts"):
        (NS_HANDLES / f"{name}.{kind}").touch()
    binds = "\n".join(f"mount --bind {base / sub} {target}" for target, sub in PRIVATE_DIRS.items())
    script = f"""
hostname {name}
mount -t overlay overlay -o lowerdir=/etc,upperdir={base}/etc.upper,workdir={base}/etc.work /etc
mount -t overlay overlay -o lowerdir=/var,upperdir={base}/var.upper,workdir={base}/var.work /var
{binds}
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t sysfs sysfs /sys
"""
    run(
        [
            "nsenter",
            f"--net={NETNS_DIR / name}",
            "unshare",
            f"--mount={NS_HANDLES / (name + '.mnt')}",
            f"--uts={NS_HANDLES / (name + '.uts')}",
            "--propagation",
            "private",
            "sh",
            "-euc",
            script,
        ]
    )


def delete_host_fs(name: str) -> None:
    for kind in ("mnt", "uts"):
        handle = NS_HANDLES / f"{name}.{kind}"
        if _is_mountpoint(handle):
            run(["umount", str(handle)])
        handle.unlink(missing_ok=True)
    shutil.rmtree(host_dir(name), ignore_errors=True)


def release_handles_dir() -> None:
    if NS_HANDLES.exists() and _is_mountpoint(NS_HANDLES):
        run(["umount", str(NS_HANDLES)])
    shutil.rmtree(RUN_DIR, ignore_errors=True)
