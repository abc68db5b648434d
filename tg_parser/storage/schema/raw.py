"""Schema of the `raw` database: messages exactly as collected, and re-collection conflicts."""

from sqlalchemy import Column, Identity, Index, Integer, MetaData, Table

from tg_parser.storage.schema.columns import choice_col, flag_col, int_col, text_col

metadata = MetaData()

raw_messages = Table(
    "raw_messages",
    metadata,
    text_col("source_ref", primary_key=True),
    text_col("id", nullable=False),
    choice_col("message_type", "post", "comment"),
    text_col("channel_id", nullable=False),
    text_col("date", nullable=False),
    text_col("text", nullable=False),
    text_col("thread_id"),
    text_col("parent_message_id"),
    text_col("language"),
    text_col("raw_payload_json"),
    flag_col("raw_payload_truncated", default=0),
    int_col("raw_payload_original_size_bytes"),
    text_col("inserted_at", nullable=False),
)
Index("raw_messages_channel_date_idx", raw_messages.c.channel_id, raw_messages.c.date)
Index("raw_messages_thread_idx", raw_messages.c.thread_id)
Index("raw_messages_type_idx", raw_messages.c.message_type)

raw_conflicts = Table(
    "raw_conflicts",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    text_col("source_ref", nullable=False),
    text_col("observed_at", nullable=False),
    text_col("reason", nullable=False),
    text_col("new_payload_json"),
    text_col("new_text"),
    text_col("new_date"),
    sqlite_autoincrement=True,
)
Index("raw_conflicts_source_time_idx", raw_conflicts.c.source_ref, raw_conflicts.c.observed_at)
