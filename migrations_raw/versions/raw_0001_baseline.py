"""Baseline: the `raw` schema exactly as release 3.0.0 created it.

A frozen copy, never edited: later changes are new revisions.

Revision ID: raw_0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "raw_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "raw_messages",
        sa.Column("source_ref", sa.Text(), nullable=True),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column(
            "message_type", sa.Text(), sa.CheckConstraint("message_type IN ('post', 'comment')"), nullable=False
        ),
        sa.Column("channel_id", sa.Text(), nullable=False),
        sa.Column("date", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("thread_id", sa.Text(), nullable=True),
        sa.Column("parent_message_id", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("raw_payload_json", sa.Text(), nullable=True),
        sa.Column(
            "raw_payload_truncated",
            sa.Integer(),
            sa.CheckConstraint("raw_payload_truncated IN (0, 1)"),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("raw_payload_original_size_bytes", sa.Integer(), nullable=True),
        sa.Column("inserted_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source_ref"),
    )
    op.create_index("raw_messages_channel_date_idx", "raw_messages", ["channel_id", "date"])
    op.create_index("raw_messages_thread_idx", "raw_messages", ["thread_id"])
    op.create_index("raw_messages_type_idx", "raw_messages", ["message_type"])

    op.create_table(
        "raw_conflicts",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("source_ref", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("new_payload_json", sa.Text(), nullable=True),
        sa.Column("new_text", sa.Text(), nullable=True),
        sa.Column("new_date", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("raw_conflicts_source_time_idx", "raw_conflicts", ["source_ref", "observed_at"])


def downgrade() -> None:
    op.drop_table("raw_conflicts")
    op.drop_table("raw_messages")
