"""Reading mariadb-binlog's decoded rows: which rows changed (their integer keys), or the whole table or database
when unsure. The text is mariadb-binlog 10.11's (--base64-output=decode-rows --verbose); the integration test
(test_mariadb_live) reads real logs."""

from __future__ import annotations

from ansible_collections.hosting.migration.plugins.module_utils.mariadb_binlog import read_changes

HEAD = """/*!50530 SET @@SESSION.PSEUDO_SLAVE_MODE=1*/;
DELIMITER /*!*/;
# at 4
#261129  3:27:38 server id 11  end_log_pos 256 CRC32 0x2a9c1a4e 	Start: binlog v 4, server v 10.11.19-MariaDB-log
"""

ROWS = """# at 1234
#261129  3:27:39 server id 11  end_log_pos 1276 CRC32 0x7f8e3d12 	GTID 0-11-7 trans
/*!100001 SET @@session.gtid_seq_no=7*//*!*/;
START TRANSACTION
/*!*/;
# at 1276
#261129  3:27:39 server id 11  end_log_pos 1350 CRC32 0x00000000 	Annotate_rows:
#Q> INSERT INTO orders (product_id, qty, note) VALUES (5, 1, 'live-5')
#261129  3:27:39 server id 11  end_log_pos 1410 CRC32 0x00000000 	Table_map: `alice_shop`.`orders` mapped to number 33
# at 1410
#261129  3:27:39 server id 11  end_log_pos 1470 CRC32 0x00000000 	Write_rows: table id 33 flags: STMT_END_F
### INSERT INTO `alice_shop`.`orders`
### SET
###   @1=1601
###   @2=5
###   @3=1
###   @4='live 5 @1=9'
### INSERT INTO `alice_shop`.`orders`
### SET
###   @1=1602
###   @2=6
###   @3=1
###   @4=NULL
### UPDATE `alice_shop`.`products`
### WHERE
###   @1=-1 (4294967295)
###   @2='SKU-8'
### SET
###   @1=20001
###   @2='SKU-8'
### DELETE FROM `alice_shop`.`audit_log`
### WHERE
###   @1='2024-01-01 00:05:00'
###   @2='event 5'
### INSERT INTO `bob_other`.`orders`
### SET
###   @1=77
# at 1600
#261129  3:27:39 server id 11  end_log_pos 1631 CRC32 0x00000000 	Xid = 120
COMMIT/*!*/;
"""

KEYS = {"orders": 1, "products": 1}


def query(statement, use=None):
    lines = ["# at 2000", "#261129  3:27:40 server id 11  end_log_pos 2100 CRC32 0x0 \tQuery\tthread_id=5\texec_time=0"]
    if use:
        lines.append(f"use `{use}`/*!*/;")
    lines += ["SET TIMESTAMP=1795836460/*!*/;", "SET @@session.pseudo_thread_id=5/*!*/;", statement, "/*!*/;"]
    return "\n".join(lines) + "\n"


def read(text, keys=None):
    return read_changes(text.splitlines(), "alice_shop", KEYS if keys is None else keys)


def test_keys_of_rows_written_updated_and_deleted_old_and_new_images():
    changes = read(HEAD + ROWS)
    assert changes.rows == {"orders": {1601, 1602}, "products": {4294967295, 20001}, "audit_log": None}
    assert changes.statements == []


def test_another_database_s_rows_are_not_ours():
    assert "orders" not in read(HEAD + ROWS.replace("alice_shop", "alice_blog")).rows


def test_a_key_number_that_is_no_integer_counts_as_the_whole_table():
    changes = read(HEAD + ROWS.replace("###   @1=1602", "###   @1='x'"))
    assert changes.rows["orders"] is None


def test_without_a_known_key_the_table_is_whole():
    assert read(HEAD + ROWS, keys={}).rows["orders"] is None


def test_transaction_control_and_account_statements_change_no_rows():
    text = (
        HEAD
        + query("BEGIN")
        + query("ALTER USER 'alice'@'%' ACCOUNT LOCK")
        + query("GRANT SELECT ON `alice_shop`.* TO 'alice_ro'@'%'", use="alice_shop")
    )
    assert read(text).statements == []


def test_a_statement_in_the_database_or_naming_it_counts_whole():
    assert read(HEAD + query("TRUNCATE TABLE orders", use="alice_shop")).statements == ["TRUNCATE TABLE orders"]
    named = read(HEAD + query("DELETE FROM alice_shop.orders", use="mysql")).statements
    assert named == ["DELETE FROM alice_shop.orders"]


def test_a_statement_elsewhere_is_not_ours_but_the_default_database_carries_over():
    assert read(HEAD + query("TRUNCATE TABLE t", use="bob_other")).statements == []
    # mariadb-binlog prints `use` only when the database changes: the next statement is still in alice_shop.
    text = HEAD + query("BEGIN", use="alice_shop") + query("DROP TABLE orders")
    assert read(text).statements == ["DROP TABLE orders"]
