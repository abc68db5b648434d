"""Baseline: the `processing` schema exactly as release 3.0.0 created it.

A frozen copy, never edited: later changes are new revisions.

Revision ID: processing_0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "processing_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_BUNDLE = "time_from IS NULL AND time_to IS NULL"
SNAPSHOT_BUNDLE = "time_from IS NOT NULL AND time_to IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "processed_documents",
        sa.Column("source_ref", sa.Text(), nullable=True),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("source_message_id", sa.Text(), nullable=False),
        sa.Column("channel_id", sa.Text(), nullable=False),
        sa.Column("processed_at", sa.Text(), nullable=False),
        sa.Column("text_clean", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("topics_json", sa.Text(), nullable=True),
        sa.Column("entities_json", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("metadata_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("source_ref"),
    )
    op.create_index("processed_documents_channel_idx", "processed_documents", ["channel_id"])
    op.create_index("processed_documents_processed_at_idx", "processed_documents", ["processed_at"])

    op.create_table(
        "processing_failures",
        sa.Column("source_ref", sa.Text(), nullable=True),
        sa.Column("channel_id", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", sa.Text(), nullable=False),
        sa.Column("error_class", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_details_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("source_ref"),
    )
    op.create_index("processing_failures_channel_idx", "processing_failures", ["channel_id"])
    op.create_index("processing_failures_last_attempt_idx", "processing_failures", ["last_attempt_at"])

    op.create_table(
        "topic_cards",
        sa.Column("id", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("scope_in_json", sa.Text(), nullable=False),
        sa.Column("scope_out_json", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), sa.CheckConstraint("type IN ('singleton', 'cluster')"), nullable=False),
        sa.Column("anchors_json", sa.Text(), nullable=False),
        sa.Column("sources_json", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.Column("tags_json", sa.Text(), nullable=True),
        sa.Column("related_topics_json", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("metadata_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("topic_cards_updated_at_idx", "topic_cards", ["updated_at"])

    op.create_table(
        "topic_bundles",
        sa.Column("topic_id", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.Column("time_from", sa.Text(), nullable=True),
        sa.Column("time_to", sa.Text(), nullable=True),
        sa.Column("items_json", sa.Text(), nullable=False),
        sa.Column("channels_json", sa.Text(), nullable=True),
        sa.Column("metadata_json", sa.Text(), nullable=True),
    )
    op.create_index(
        "topic_bundles_current_unique_idx",
        "topic_bundles",
        ["topic_id"],
        unique=True,
        sqlite_where=sa.text(CURRENT_BUNDLE),
        postgresql_where=sa.text(CURRENT_BUNDLE),
    )
    op.create_index(
        "topic_bundles_snapshot_unique_idx",
        "topic_bundles",
        ["topic_id", "time_from", "time_to"],
        unique=True,
        sqlite_where=sa.text(SNAPSHOT_BUNDLE),
        postgresql_where=sa.text(SNAPSHOT_BUNDLE),
    )

    op.create_table(
        "api_jobs",
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.Column(
            "job_type", sa.Text(), sa.CheckConstraint("job_type IN ('processing', 'export')"), nullable=False
        ),
        sa.Column(
            "status",
            sa.Text(),
            sa.CheckConstraint("status IN ('pending', 'running', 'completed', 'failed')"),
            nullable=False,
        ),
        sa.Column("created_at", sa.Text(), nullable=False),
        *(
            sa.Column(name, sa.Text(), nullable=True)
            for name in (
                "channel_id",
                "client",
                "started_at",
                "completed_at",
                "progress_json",
                "result_json",
                "error",
                "file_path",
                "download_url",
                "export_format",
                "webhook_url",
                "webhook_secret",
            )
        ),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("api_jobs_status_idx", "api_jobs", ["status"])
    op.create_index("api_jobs_created_at_idx", "api_jobs", [sa.text("created_at DESC")])
    op.create_index("api_jobs_job_type_idx", "api_jobs", ["job_type"])

    op.create_table(
        "agent_states",
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("agent_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), server_default="1.0.0", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("capabilities_json", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=True),
        sa.Column("total_tasks_processed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_errors", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "avg_processing_time_ms",
            sa.REAL().with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            server_default=sa.text("0.0"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("agent_states_type_idx", "agent_states", ["agent_type"])
    op.create_index("agent_states_active_idx", "agent_states", ["is_active"])

    op.create_table(
        "task_history",
        sa.Column("id", sa.Text(), nullable=True),
        sa.Column("agent_name", sa.Text(), nullable=False),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("source_ref", sa.Text(), nullable=True),
        sa.Column("channel_id", sa.Text(), nullable=True),
        sa.Column("input_json", sa.Text(), nullable=False),
        sa.Column("output_json", sa.Text(), nullable=True),
        sa.Column("success", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processing_time_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["agent_name"], ["agent_states.name"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("task_history_agent_idx", "task_history", ["agent_name"])
    op.create_index("task_history_channel_idx", "task_history", ["channel_id"])
    op.create_index("task_history_created_idx", "task_history", [sa.text("created_at DESC")])
    op.create_index("task_history_expires_idx", "task_history", ["expires_at"])
    op.create_index("task_history_source_ref_idx", "task_history", ["source_ref"])

    op.create_table(
        "agent_stats",
        sa.Column("agent_name", sa.Text(), nullable=False),
        sa.Column("date", sa.Text(), nullable=False),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("total_tasks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("successful_tasks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed_tasks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_processing_time_ms", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("min_processing_time_ms", sa.Integer(), nullable=True),
        sa.Column("max_processing_time_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("agent_name", "date", "task_type"),
    )
    op.create_index("agent_stats_agent_idx", "agent_stats", ["agent_name"])
    op.create_index("agent_stats_date_idx", "agent_stats", [sa.text("date DESC")])

    op.create_table(
        "handoff_history",
        sa.Column("id", sa.Text(), nullable=True),
        sa.Column("source_agent", sa.Text(), nullable=False),
        sa.Column("target_agent", sa.Text(), nullable=False),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.Column(
            "status",
            sa.Text(),
            sa.CheckConstraint(
                "status IN ('pending', 'accepted', 'in_progress', 'completed', 'failed', 'rejected')"
            ),
            nullable=False,
        ),
        sa.Column("payload_json", sa.Text(), nullable=True),
        sa.Column("context_json", sa.Text(), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processing_time_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("accepted_at", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("handoff_history_source_idx", "handoff_history", ["source_agent"])
    op.create_index("handoff_history_target_idx", "handoff_history", ["target_agent"])
    op.create_index("handoff_history_status_idx", "handoff_history", ["status"])
    op.create_index("handoff_history_created_idx", "handoff_history", [sa.text("created_at DESC")])


def downgrade() -> None:
    for table in (
        "handoff_history",
        "agent_stats",
        "task_history",
        "agent_states",
        "api_jobs",
        "topic_bundles",
        "topic_cards",
        "processing_failures",
        "processed_documents",
    ):
        op.drop_table(table)
