"""A copy corrupted on the destination before verification (issue 7, long; tests/integration/test_account_move.py
runs the same two in the short suite): a byte flipped in a copied file, a row changed with the row count kept. The
verification names the object and nothing is switched: the source serves everything; the same move without the
corruption converges with nothing lost."""

from __future__ import annotations

import json

import pytest
from faults import MOVES, fresh_lab, ledger, serving_side
from lab_state import playbook
from manifest import compare, manifest

pytestmark = [pytest.mark.lab, pytest.mark.long]

CORRUPTIONS = {
    "a byte flipped in a copied file": (
        ["sh", "-c", "printf X | dd of=/home/carol/files/document-03.txt bs=1 seek=5 conv=notrunc status=none"],
        "document-03.txt",
    ),
    "a row changed, the count kept": (
        ["mariadb", "--protocol=socket", "-e", "UPDATE carol_blog.posts SET title = 'Post X' WHERE id = 1"],
        "posts",
    ),
}


@pytest.fixture(scope="module")
def fresh(lab):
    return fresh_lab(lab)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupted_copy_is_named_and_never_switched(fresh, corruption, mariadb, postgresql, record_property):
    command, named = CORRUPTIONS[corruption]
    source = serving_side(fresh, "carol")
    play, destination = MOVES[source]
    expected = manifest(fresh, source, "carol", mariadb, postgresql)
    hook = json.dumps({"account_migrate_before_verify_command": command})
    corrupted = playbook(play, "-e", "account=carol", "-e", hook, check=False)
    assert corrupted.returncode != 0, "a corrupted copy was switched"
    assert "verification found" in corrupted.stdout and named in corrupted.stdout, corrupted.stdout[-3000:]
    assert serving_side(fresh, "carol") == source
    compared, lost, unexpected = compare(expected, manifest(fresh, source, "carol", mariadb, postgresql))
    assert (lost, unexpected) == ([], []), f"the source lost {lost}, gained {unexpected}"
    rerun = playbook(play, "-e", "account=carol", check=False)
    converged = rerun.returncode == 0 and serving_side(fresh, "carol") == destination
    count, lost2, unexpected2 = compare(expected, manifest(fresh, destination, "carol", mariadb, postgresql))
    ledger(record_property, f"{corruption} on the destination", runs=2, converged=converged,
           compared=compared + count, lost=len(lost) + len(lost2),
           unexpected=len(unexpected) + len(unexpected2))  # fmt: skip
    assert converged, rerun.stdout[-3000:]
    assert (lost2, unexpected2) == ([], [])
