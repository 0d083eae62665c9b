"""callbacks (jobs' callback URLs, the callbacks table) and endpoint health (project_flow)

Revision ID: d1f6b2c4e5a7
Revises: a7d3e9f1c2b4
Create Date: 2026-11-29 14:00:00

``project_flow.endpoint_paused_at`` and ``endpoint_pause_reason`` are also added by the ingest
branch's b8e4f0a2d3c5 (agreed storage); when both branches are merged, keep them in one
revision only.
"""
from alembic import op
import sqlalchemy as sa


revision = "d1f6b2c4e5a7"
down_revision = "a7d3e9f1c2b4"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("failure_callback_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("callback_status", sa.String(length=16), nullable=True))
    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("handed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("holder", sa.String(length=80), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_callbacks_job_id", "callbacks", ["job_id"])
    op.create_index("ix_callbacks_state_next", "callbacks", ["state", "next_attempt_at"])
    with op.batch_alter_table("project_flow") as batch:
        batch.add_column(sa.Column("endpoint_paused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("endpoint_pause_reason", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("endpoint_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("endpoint_failing_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("endpoint_probe_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("slow_start", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade():
    with op.batch_alter_table("project_flow") as batch:
        batch.drop_column("slow_start")
        batch.drop_column("endpoint_probe_at")
        batch.drop_column("endpoint_failing_since")
        batch.drop_column("endpoint_failures")
        batch.drop_column("endpoint_pause_reason")
        batch.drop_column("endpoint_paused_at")
    op.drop_index("ix_callbacks_state_next", table_name="callbacks")
    op.drop_index("ix_callbacks_job_id", table_name="callbacks")
    op.drop_table("callbacks")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("callback_status")
        batch.drop_column("failure_callback_url")
        batch.drop_column("callback_url")
