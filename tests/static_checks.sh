#!/usr/bin/env bash
# Static checks of the collection: ruff, ansible-lint (production profile) and ansible-test sanity.
# Needs the test tools (requirements-test.txt) first on PATH, e.g.
#   PATH=/path/to/venv/bin:$PATH bash tests/static_checks.sh
# Every tool runs even if an earlier one failed; a one-line summary per tool closes the output, and the exit code
# is non-zero if any of them failed.
#
# ansible-test sanity runs with no --skip-test. Its tests that need packages (changelog, import, pep8, pylint,
# runtime-metadata, validate-modules, yamllint, ...) each get a virtualenv, which ansible-test fills from PyPI
# (reachable) after bootstrapping pip with a get-pip script downloaded from ci-files.testing.ansible.com
# (unreachable here: every one of those tests then fails with "Download failed"). provide_pip_bootstrap below
# removes that one download instead of skipping the tests. shellcheck and pslint skip themselves, with a warning,
# where shellcheck or pwsh is not installed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

summary=()
failed=0

# begin NAME / end EXIT_CODE: frame one tool's run and record its result for the summary.
begin() {
    tool=$1
    started=$SECONDS
    echo "=== $tool"
}
end() {
    if (($1 == 0)); then
        summary+=("$tool: passed ($((SECONDS - started)) s)")
    else
        summary+=("$tool: FAILED, exit code $1 ($((SECONDS - started)) s)")
        failed=1
    fi
}

# ansible-test looks for its pip bootstrap script in ~/.ansible/test/cache/ before downloading it (the place its
# own error message says to save a manual download). Put there a stand-in that does what get-pip.py does with its
# embedded copy of pip: run that same pip version, here from its wheel on PyPI, as `pip install ARGS`.
provide_pip_bootstrap() {
    local version cache script
    # The pip version ansible-test bootstraps (it names the cached script).
    version=$(python -c 'import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="3.11"))["pip"])') || return 1
    cache=$HOME/.ansible/test/cache
    script=$cache/get_pip_${version//./_}.py
    [[ -e $script ]] && return 0
    mkdir -p "$cache"
    python -m pip download --quiet --no-deps --only-binary :all: --dest "$cache" "pip==$version" || return 1
    # Written last: its presence means the wheel is there. --no-setuptools/--no-wheel are get-pip's own options.
    cat >"$script" <<EOF
# Stand-in for get-pip.py $version, written by hosting.migration's tests/static_checks.sh.
import os, runpy, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-$version-py3-none-any.whl"))
sys.argv = ["pip", "install", *[a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
EOF
}

# ansible-test only works on a collection that sits in .../ansible_collections/NAMESPACE/NAME, so it runs on a copy
# of the files git tracks or would track (untracked but not ignored), as they are in the work tree. Left out:
# collections/ (a link back to the repository root, which in the copy would loop; galaxy.yml's build_ignore has it)
# and files deleted but not yet staged. Outside a git repository ansible-test lists the copy's files itself, so no
# .git is needed, and it installs each sanity test's requirements into its own managed virtualenvs without
# --requirements.
sanity() {
    local dest=$work/ansible_collections/hosting/migration
    mkdir -p "$dest"
    git ls-files -co --exclude-standard -z |
        while IFS= read -r -d '' file; do
            [[ $file == collections/* || ! -e $file ]] || printf '%s\0' "$file"
        done |
        tar --null --files-from=- -cf - | tar -xf - -C "$dest" || return 1
    provide_pip_bootstrap || return 1
    (cd "$dest" && ansible-test sanity --python 3.11 --local --color no)
}

# `|| rc=$?` keeps `set -e` from stopping at the first failing tool.
begin "ruff check"
rc=0; ruff check . || rc=$?
end "$rc"

begin "ruff format --check"
rc=0; ruff format --check . || rc=$?
end "$rc"

begin "ansible-lint"
rc=0; ansible-lint || rc=$?
end "$rc"

begin "ansible-test sanity"
rc=0; sanity || rc=$?
end "$rc"

echo "=== summary"
if ! command -v shellcheck >/dev/null; then
    summary+=("  (shellcheck is not installed: the shellcheck sanity test skipped itself)")
fi
printf '%s\n' "${summary[@]}"
exit "$failed"
