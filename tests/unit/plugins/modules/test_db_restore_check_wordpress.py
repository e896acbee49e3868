"""WordPress's own zero-date defaults are a note, not a blocker: WordPress removes NO_ZERO_DATE from its
connections' sql_mode. The same columns without a WordPress options table beside them, or other columns, still
block."""

from __future__ import annotations

import pytest

from ansible_collections.hosting.migration.plugins.modules.db_restore_check import _wordpress_column

WORDPRESS = {"wp_options", "wp_posts", "wp_comments", "wp_users", "wp_links", "shop_options", "shop_posts"}


@pytest.mark.parametrize(
    ("table", "column"),
    [("wp_posts", "post_date"), ("wp_comments", "comment_date_gmt"), ("wp_users", "user_registered"),
     ("shop_posts", "post_modified_gmt")],
)  # fmt: skip
def test_wordpress_schema_columns_are_recognised_with_their_prefix(table, column):
    assert _wordpress_column(table, column, WORDPRESS)


@pytest.mark.parametrize(
    ("table", "column", "tables"),
    [
        ("wp_posts", "post_date", {"wp_posts"}),  # no options table: not WordPress
        ("wp_posts", "published_at", WORDPRESS),  # not a column of WordPress's schema
        ("orders", "created_at", WORDPRESS),
        ("blog_posts", "post_date", WORDPRESS),  # no blog_options
    ],
)
def test_other_zero_date_columns_still_block(table, column, tables):
    assert not _wordpress_column(table, column, tables)
