"""The chunked live comparison both live methods share, on stub sums (the engines' own sums run against the lab:
test_pg_live, test_mariadb_live)."""

from __future__ import annotations

from ansible_collections.hosting.migration.plugins.module_utils.live_verify import (
    CHUNK_KEYS,
    chunk_differences,
    chunks_of,
    compare_rounds,
)


class Side:
    """A server's tables as {table: {chunk: (rows, hash)}}, which can change between rounds; records what it hashed."""

    def __init__(self, tables):
        self.tables, self.asked = tables, []

    def sums(self, pending):
        self.asked.append(dict(pending))
        return {
            table: {c: v for c, v in self.tables[table].items() if chunks is None or c in chunks}
            for table, chunks in pending.items()
        }


def test_equal_tables_are_verified_and_a_written_chunk_stays_pending_alone():
    source = Side({"plants": {0: (10, "a")}, "visits": {0: (10, "b"), 1: (5, "c")}, "tags": {0: (3, "d")}})
    destination = Side({"plants": {0: (10, "a")}, "visits": {0: (10, "b"), 1: (4, "x")}, "tags": {0: (2, "e")}})
    verified = compare_rounds({"plants": "id", "visits": "id", "tags": None}, source.sums, destination.sums,
                              lambda: True, rounds=3)  # fmt: skip
    assert verified == {"plants": {"key": "id", "pending": []}, "visits": {"key": "id", "pending": [1]}}
    # After the first round only the differing chunk of visits and the key-less tags are read again.
    assert source.asked[1] == {"visits": {1}, "tags": None}


def test_a_chunk_that_catches_up_between_rounds_is_verified():
    source = Side({"visits": {0: (10, "b"), 1: (5, "c")}})
    destination = Side({"visits": {0: (10, "b"), 1: (4, "x")}})

    def caught_up():
        if len(destination.asked) == 1:
            destination.tables["visits"][1] = (5, "c")  # the replication applied the row meanwhile
        return True

    verified = compare_rounds({"visits": "id"}, source.sums, destination.sums, caught_up, rounds=3)
    assert verified == {"visits": {"key": "id", "pending": []}} and len(source.asked) == 2


def test_nothing_is_verified_when_the_destination_never_catches_up():
    source = Side({"plants": {0: (10, "a")}})
    assert compare_rounds({"plants": "id"}, source.sums, source.sums, lambda: False, rounds=3) == {}


def test_chunks_and_their_differences():
    assert chunks_of([5, CHUNK_KEYS, -1], [7]) == {0, 1, -1, 7}
    found = chunk_differences("mariadb", "alice_shop", "orders", "id", {0, 1}, {0: (1, "a"), 1: (2, "b")},
                              {0: (1, "a"), 1: (2, "c")})  # fmt: skip
    assert found == [f"mariadb table alice_shop.orders, key id from {CHUNK_KEYS} to {2 * CHUNK_KEYS - 1}: "
                     "source (2, 'b') != destination (2, 'c')"]  # fmt: skip
