"""Reading test_decoding's text: which rows changed (their integer keys), or the whole table when unsure."""

from __future__ import annotations

import pytest

from ansible_collections.hosting.migration.plugins.module_utils.pg_decoding import (
    changed_rows,
    touched_tables,
    tuple_values,
)

KEYS = {"public.orders": "id", "public.events": "id", 'Odd".Sch.T t': "I d", "public.log": None}


def test_keys_of_inserts_updates_and_deletes_are_collected_old_and_new():
    lines = [
        "BEGIN",
        "table public.orders: INSERT: id[integer]:179093 customer_id[integer]:94 total[numeric]:1.00",
        "table public.events: UPDATE: id[bigint]:12 kind[text]:'live'",
        "table public.events: UPDATE: old-key: id[bigint]:3 new-tuple: id[bigint]:40000 kind[text]:null",
        "table public.orders: DELETE: id[integer]:-5",
        "COMMIT",
    ]
    assert changed_rows(lines, KEYS) == {"public.orders": {179093, -5}, "public.events": {3, 12, 40000}}


def test_a_key_lookalike_inside_a_quoted_value_is_not_taken_for_the_key():
    lines = ["table public.orders: INSERT: note[text]:'it''s id[integer]:5 '' x' id[integer]:6"]
    assert changed_rows(lines, KEYS) == {"public.orders": {6}}


def test_quoted_identifiers_with_quotes_dots_and_spaces():
    lines = ['table "Odd"""."Sch.T t": DELETE: "I d"[integer]:9']
    assert changed_rows(lines, {'Odd".Sch.T t': "I d"}) == {'Odd".Sch.T t': {9}}


@pytest.mark.parametrize(
    "line",
    [
        "table public.log: INSERT: at[timestamp with time zone]:'2026-11-29' tags[text[]]:'{a,b}'",  # no key
        "table public.orders, public.log: TRUNCATE: (no-flags)",  # a truncate
        "table public.orders: DELETE: (no-tuple-data)",  # nothing readable
        "table public.orders: UPDATE: id[integer]:unchanged-toast-datum",  # a key that is no integer
        "table public.orders: INSERT: customer_id[integer]:4",  # the key missing
    ],
)
def test_what_cannot_be_read_for_sure_counts_as_the_whole_table(line):
    changed = changed_rows([line, "table public.orders: INSERT: id[integer]:1"], KEYS)
    assert changed[line.split()[1].rstrip(":,")] is None
    if "public.orders" in line:
        assert changed["public.orders"] is None, "a later readable change must not narrow a whole-table change"


def test_a_table_unknown_to_the_verification_counts_whole():
    assert changed_rows(["table public.new_one: INSERT: id[integer]:1"], KEYS) == {"public.new_one": None}


def test_an_unreadable_line_is_an_error_not_silence():
    with pytest.raises(ValueError, match="unreadable change"):
        changed_rows(["tabel public.orders: INSERT: id[integer]:1"], KEYS)


def test_tuple_values_keep_types_with_brackets_and_quoted_values():
    assert tuple_values("a[integer[]]:'{1,2}' \"b c\"[text]:'x y' d[boolean]:true") == [
        ("a", "'{1,2}'"),
        ("b c", "'x y'"),
        ("d", "true"),
    ]


def test_touched_tables_counts_changes_per_table():
    lines = ["BEGIN", "table public.a: INSERT: id[integer]:1", "table public.a: DELETE: id[integer]:1",
             "table public.a, public.b: TRUNCATE: (no-flags)", "COMMIT"]  # fmt: skip
    assert touched_tables(lines) == {"public.a": 3, "public.b": 1}
