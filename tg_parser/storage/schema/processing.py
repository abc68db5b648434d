"""Schema of the `processing` database: documents, failures, topics, API jobs and agents.

Releases 1.x and 2.x had only the first four tables; 3.0.0 added the rest.
"""

from sqlalchemy import ForeignKey, Index, MetaData, PrimaryKeyConstraint, Table, text

from tg_parser.storage.schema.columns import choice_col, int_col, real_col, text_col

metadata = MetaData()

processed_documents = Table(
    "processed_documents",
    metadata,
    text_col("source_ref", primary_key=True),
    text_col("id", nullable=False),
    text_col("source_message_id", nullable=False),
    text_col("channel_id", nullable=False),
    text_col("processed_at", nullable=False),
    text_col("text_clean", nullable=False),
    text_col("summary"),
    text_col("topics_json"),
    text_col("entities_json"),
    text_col("language"),
    text_col("metadata_json"),
)
Index("processed_documents_channel_idx", processed_documents.c.channel_id)
Index("processed_documents_processed_at_idx", processed_documents.c.processed_at)

processing_failures = Table(
    "processing_failures",
    metadata,
    text_col("source_ref", primary_key=True),
    text_col("channel_id", nullable=False),
    int_col("attempts", nullable=False),
    text_col("last_attempt_at", nullable=False),
    text_col("error_class"),
    text_col("error_message"),
    text_col("error_details_json"),
)
Index("processing_failures_channel_idx", processing_failures.c.channel_id)
Index("processing_failures_last_attempt_idx", processing_failures.c.last_attempt_at)

topic_cards = Table(
    "topic_cards",
    metadata,
    text_col("id", primary_key=True),
    text_col("title", nullable=False),
    text_col("summary", nullable=False),
    text_col("scope_in_json", nullable=False),
    text_col("scope_out_json", nullable=False),
    choice_col("type", "singleton", "cluster"),
    text_col("anchors_json", nullable=False),
    text_col("sources_json", nullable=False),
    text_col("updated_at", nullable=False),
    text_col("tags_json"),
    text_col("related_topics_json"),
    text_col("status"),
    text_col("metadata_json"),
)
Index("topic_cards_updated_at_idx", topic_cards.c.updated_at)

topic_bundles = Table(
    "topic_bundles",
    metadata,
    text_col("topic_id", nullable=False),
    text_col("updated_at", nullable=False),
    text_col("time_from"),
    text_col("time_to"),
    text_col("items_json", nullable=False),
    text_col("channels_json"),
    text_col("metadata_json"),
)
_CURRENT = "time_from IS NULL AND time_to IS NULL"
_SNAPSHOT = "time_from IS NOT NULL AND time_to IS NOT NULL"
Index(
    "topic_bundles_current_unique_idx",
    topic_bundles.c.topic_id,
    unique=True,
    sqlite_where=text(_CURRENT),
    postgresql_where=text(_CURRENT),
)
Index(
    "topic_bundles_snapshot_unique_idx",
    topic_bundles.c.topic_id,
    topic_bundles.c.time_from,
    topic_bundles.c.time_to,
    unique=True,
    sqlite_where=text(_SNAPSHOT),
    postgresql_where=text(_SNAPSHOT),
)

api_jobs = Table(
    "api_jobs",
    metadata,
    text_col("job_id", primary_key=True),
    choice_col("job_type", "processing", "export"),
    choice_col("status", "pending", "running", "completed", "failed"),
    text_col("created_at", nullable=False),
    text_col("channel_id"),
    text_col("client"),
    text_col("started_at"),
    text_col("completed_at"),
    text_col("progress_json"),
    text_col("result_json"),
    text_col("error"),
    text_col("file_path"),
    text_col("download_url"),
    text_col("export_format"),
    text_col("webhook_url"),
    text_col("webhook_secret"),
)
Index("api_jobs_status_idx", api_jobs.c.status)
Index("api_jobs_created_at_idx", api_jobs.c.created_at.desc())
Index("api_jobs_job_type_idx", api_jobs.c.job_type)

agent_states = Table(
    "agent_states",
    metadata,
    text_col("name", primary_key=True),
    text_col("agent_type", nullable=False),
    text_col("version", nullable=False, server_default="1.0.0"),
    text_col("description"),
    text_col("capabilities_json", nullable=False),
    text_col("model"),
    text_col("provider"),
    int_col("is_active", nullable=False, default=1),
    text_col("metadata_json"),
    int_col("total_tasks_processed", nullable=False, default=0),
    int_col("total_errors", nullable=False, default=0),
    real_col("avg_processing_time_ms", default="0.0"),
    text_col("last_used_at"),
    text_col("created_at", nullable=False),
    text_col("updated_at", nullable=False),
)
Index("agent_states_type_idx", agent_states.c.agent_type)
Index("agent_states_active_idx", agent_states.c.is_active)

task_history = Table(
    "task_history",
    metadata,
    text_col("id", primary_key=True),
    text_col("agent_name", ForeignKey("agent_states.name"), nullable=False),
    text_col("task_type", nullable=False),
    text_col("source_ref"),
    text_col("channel_id"),
    text_col("input_json", nullable=False),
    text_col("output_json"),
    int_col("success", nullable=False, default=1),
    text_col("error"),
    int_col("processing_time_ms"),
    text_col("created_at", nullable=False),
    text_col("expires_at"),
)
Index("task_history_agent_idx", task_history.c.agent_name)
Index("task_history_channel_idx", task_history.c.channel_id)
Index("task_history_created_idx", task_history.c.created_at.desc())
Index("task_history_expires_idx", task_history.c.expires_at)
Index("task_history_source_ref_idx", task_history.c.source_ref)

agent_stats = Table(
    "agent_stats",
    metadata,
    text_col("agent_name", nullable=False),
    text_col("date", nullable=False),
    text_col("task_type", nullable=False),
    int_col("total_tasks", nullable=False, default=0),
    int_col("successful_tasks", nullable=False, default=0),
    int_col("failed_tasks", nullable=False, default=0),
    int_col("total_processing_time_ms", nullable=False, default=0),
    int_col("min_processing_time_ms"),
    int_col("max_processing_time_ms"),
    PrimaryKeyConstraint("agent_name", "date", "task_type"),
)
Index("agent_stats_agent_idx", agent_stats.c.agent_name)
Index("agent_stats_date_idx", agent_stats.c.date.desc())

handoff_history = Table(
    "handoff_history",
    metadata,
    text_col("id", primary_key=True),
    text_col("source_agent", nullable=False),
    text_col("target_agent", nullable=False),
    text_col("task_type", nullable=False),
    int_col("priority", nullable=False, default=5),
    choice_col(
        "status", "pending", "accepted", "in_progress", "completed", "failed", "rejected"
    ),
    text_col("payload_json"),
    text_col("context_json"),
    text_col("result_json"),
    text_col("error"),
    int_col("processing_time_ms"),
    text_col("created_at", nullable=False),
    text_col("accepted_at"),
    text_col("completed_at"),
)
Index("handoff_history_source_idx", handoff_history.c.source_agent)
Index("handoff_history_target_idx", handoff_history.c.target_agent)
Index("handoff_history_status_idx", handoff_history.c.status)
Index("handoff_history_created_idx", handoff_history.c.created_at.desc())

# Tables that releases 1.x and 2.x did not have yet.
ADDED_IN_3_0_0 = ("api_jobs", "agent_states", "task_history", "agent_stats", "handoff_history")
