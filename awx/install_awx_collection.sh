#!/usr/bin/env bash
# Install awx.awx (the version awx/requirements.yml pins) from the `ansible` package on PyPI, for machines that
# reach PyPI but not Galaxy: the wheel of ansible 12.3.0 bundles awx.awx 24.6.1. Only that collection is unpacked.
#   awx/install_awx_collection.sh [COLLECTIONS_DIR]     (default: this checkout's collections/)
# Needs python3 with pip. Does nothing when the pinned version is there already.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo/collections}
wheel_pin=ansible==12.3.0
version=24.6.1
manifest=$dest/ansible_collections/awx/awx/MANIFEST.json

if [[ -e $manifest ]] && grep -q "\"version\": \"$version\"" "$manifest"; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: --dest "$work" "$wheel_pin"
python3 - "$work"/ansible-*.whl "$dest" "$version" <<'PY'
import json, shutil, sys, zipfile
from pathlib import Path

wheel, dest, version = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
prefix = "ansible_collections/awx/awx/"
with zipfile.ZipFile(wheel) as archive:
    manifest = json.loads(archive.read(prefix + "MANIFEST.json"))["collection_info"]
    if manifest["version"] != version:
        sys.exit(f"{wheel} holds awx.awx {manifest['version']}, not {version}")
    target = dest / prefix
    staging = dest / "ansible_collections/awx/.awx.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            path = staging / name[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(name))
    # Swapped in whole, so an interrupted install never leaves half a collection under the real name.
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
print(f"awx.awx {version} installed in {dest}")
PY
