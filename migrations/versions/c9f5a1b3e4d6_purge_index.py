"""retention: index of jobs by status and last change, for admin purge

Revision ID: c9f5a1b3e4d6
Revises: e5c7a9b1d3f2
Create Date: 2026-11-29 14:00:00

"""
from alembic import op


revision = "c9f5a1b3e4d6"
down_revision = "e5c7a9b1d3f2"
branch_labels = None
depends_on = None


def upgrade():
    # On a big PostgreSQL table, create it first by hand with CREATE INDEX CONCURRENTLY under
    # the same name (docs/operations.md, "Upgrades"): then this is a no-op.
    op.create_index("ix_jobs_status_updated", "jobs", ["status", "updated_at"], if_not_exists=True)


def downgrade():
    op.drop_index("ix_jobs_status_updated", table_name="jobs")
