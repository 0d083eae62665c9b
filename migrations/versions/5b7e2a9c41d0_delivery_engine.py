"""delivery engine: flow control, holders, worker heartbeats, lateness

Revision ID: 5b7e2a9c41d0
Revises: 1d056b0e2fcb
Create Date: 2026-11-29 11:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "5b7e2a9c41d0"
down_revision = "1d056b0e2fcb"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("parallelism", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_per_second", sa.Float(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("holder", sa.String(length=80), nullable=True))
        batch.create_index(
            "ix_jobs_project_status_next", ["project_id", "status", "next_attempt_at"]
        )
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("lateness_ms", sa.Integer(), nullable=True))
        batch.create_index("ix_attempts_started_at", ["started_at"])
    op.create_table(
        "project_flow",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("effective", sa.Integer(), nullable=True),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("tokens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id"),
    )
    op.execute(
        "INSERT INTO project_flow (project_id, streak, tokens, waiting, version) "
        "SELECT id, 0, 1.0, false, 0 FROM projects"
    )
    op.create_table(
        "worker_processes",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("stopping", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("worker_processes")
    op.drop_table("project_flow")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_started_at")
        batch.drop_column("lateness_ms")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_project_status_next")
        batch.drop_column("holder")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("rate_per_second")
        batch.drop_column("parallelism")
