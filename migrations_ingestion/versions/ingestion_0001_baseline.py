"""Baseline: the `ingestion` schema exactly as release 3.0.0 created it.

A frozen copy, never edited: later changes are new revisions.

Revision ID: ingestion_0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ingestion_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("channel_id", sa.Text(), nullable=False),
        sa.Column("channel_username", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), sa.CheckConstraint("status IN ('active', 'paused', 'error')"), nullable=False),
        sa.Column("include_comments", sa.Integer(), sa.CheckConstraint("include_comments IN (0, 1)"), nullable=False),
        sa.Column("history_from", sa.Text(), nullable=True),
        sa.Column("history_to", sa.Text(), nullable=True),
        sa.Column("poll_interval_seconds", sa.Integer(), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("last_post_id", sa.Text(), nullable=True),
        sa.Column("backfill_completed_at", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", sa.Text(), nullable=True),
        sa.Column("last_success_at", sa.Text(), nullable=True),
        sa.Column("fail_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("rate_limit_until", sa.Text(), nullable=True),
        sa.Column(
            "comments_unavailable",
            sa.Integer(),
            sa.CheckConstraint("comments_unavailable IN (0, 1)"),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source_id"),
    )
    op.create_index("sources_status_idx", "sources", ["status"])
    op.create_index("sources_channel_id_idx", "sources", ["channel_id"])

    op.create_table(
        "comment_cursors",
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("thread_id", sa.Text(), nullable=False),
        sa.Column("last_comment_id", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "thread_id"),
    )
    op.create_index("comment_cursors_thread_idx", "comment_cursors", ["thread_id"])

    op.create_table(
        "source_attempts",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("attempt_at", sa.Text(), nullable=False),
        sa.Column("success", sa.Integer(), sa.CheckConstraint("success IN (0, 1)"), nullable=False),
        sa.Column("error_class", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("details_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("source_attempts_source_time_idx", "source_attempts", ["source_id", "attempt_at"])


def downgrade() -> None:
    op.drop_table("source_attempts")
    op.drop_table("comment_cursors")
    op.drop_table("sources")
