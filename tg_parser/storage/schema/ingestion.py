"""Schema of the `ingestion` database: sources, comment cursors, attempts."""

from sqlalchemy import Column, Identity, Index, Integer, MetaData, PrimaryKeyConstraint, Table

from tg_parser.storage.schema.columns import choice_col, flag_col, int_col, text_col

metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    text_col("source_id", primary_key=True),
    text_col("channel_id", nullable=False),
    text_col("channel_username"),
    choice_col("status", "active", "paused", "error"),
    flag_col("include_comments"),
    text_col("history_from"),
    text_col("history_to"),
    int_col("poll_interval_seconds"),
    int_col("batch_size"),
    text_col("last_post_id"),
    text_col("backfill_completed_at"),
    text_col("last_attempt_at"),
    text_col("last_success_at"),
    int_col("fail_count", nullable=False, default=0),
    text_col("last_error"),
    text_col("rate_limit_until"),
    flag_col("comments_unavailable", default=0),
    text_col("created_at", nullable=False),
    text_col("updated_at", nullable=False),
)
Index("sources_status_idx", sources.c.status)
Index("sources_channel_id_idx", sources.c.channel_id)

comment_cursors = Table(
    "comment_cursors",
    metadata,
    text_col("source_id", nullable=False),
    text_col("thread_id", nullable=False),
    text_col("last_comment_id"),
    text_col("updated_at", nullable=False),
    PrimaryKeyConstraint("source_id", "thread_id"),
)
Index("comment_cursors_thread_idx", comment_cursors.c.thread_id)

source_attempts = Table(
    "source_attempts",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    text_col("source_id", nullable=False),
    text_col("attempt_at", nullable=False),
    flag_col("success"),
    text_col("error_class"),
    text_col("error_message"),
    text_col("details_json"),
    sqlite_autoincrement=True,
)
Index("source_attempts_source_time_idx", source_attempts.c.source_id, source_attempts.c.attempt_at)
